"""playbooks/local_down.yml forgets the removed container's cached facts: a deploy right
after it must ask the new container, not reuse the old one's address or migration phase."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(tmp_path: Path, playbook: Path, inventory: Path) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_CACHE_PLUGIN_CONNECTION=str(tmp_path / "facts"),
        NO_COLOR="1",
    )
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def one_task_play(tmp_path: Path, name: str, host: str, task: str) -> Path:
    path = tmp_path / f"{name}.yml"
    path.write_text(f"- hosts: {host}\n  gather_facts: false\n  tasks:\n    - {task}\n")
    return path


def test_the_removed_containers_cached_facts_are_forgotten(tmp_path: Path) -> None:
    # A container name nobody runs: removing it is a no-op for Docker.
    host = f"kimh-unit-local-down-{os.getpid()}"
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  children:\n    local_containers:\n      hosts:\n"
        f"        {host}: {{ansible_connection: community.docker.docker}}\n"
    )
    seed = one_task_play(
        tmp_path, "seed", host, "ansible.builtin.set_fact: {kimh_phase_seen: 3, cacheable: true}"
    )
    seeded = run(tmp_path, seed, inventory)
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    assert [p.name for p in (tmp_path / "facts").iterdir() if p.name.endswith(host)]

    down = run(tmp_path, ROOT / "playbooks" / "local_down.yml", inventory)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [p.name for p in (tmp_path / "facts").iterdir() if p.name.endswith(host)]

    probe = one_task_play(
        tmp_path,
        "probe",
        host,
        "ansible.builtin.debug: {msg: \"SEEN={{ kimh_phase_seen | default('none') }}\"}",
    )
    probed = run(tmp_path, probe, inventory)
    assert probed.returncode == 0, probed.stdout + probed.stderr
    assert "SEEN=none" in probed.stdout
