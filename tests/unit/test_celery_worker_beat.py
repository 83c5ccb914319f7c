"""Exactly one Celery beat: the celery_worker role refuses a second beat host anywhere in
the inventory (every host's inventory variables, not only the hosts of the play), and the
message names the hosts. Controller only: check mode, connection local, and the play stops
at validation, so nothing is installed here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from controller_play import run_playbook

SECRET = "fake-secret-id-must-never-show-5c2a"
ASSERT_TASK = "celery_worker : Refuse more than one beat in the inventory"


def run_play(tmp_path: Path, hosts: dict[str, dict], play_hosts: str, extra: dict | None = None):
    """The role on `play_hosts` of an inventory of fake local hosts (group `workers` holds
    the hosts whose name starts with worker-, group `other` the rest)."""
    common = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "celery_worker_vault_role_id": "fake-role-id",
        "celery_worker_vault_secret_id": SECRET,
        "celery_worker_install_release": False,
    }
    groups: dict[str, dict] = {"workers": {"hosts": {}}, "other": {"hosts": {}}}
    for name, variables in hosts.items():
        group = "workers" if name.startswith("worker-") else "other"
        groups[group]["hosts"][name] = {**common, **variables}
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"children": groups}}))
    args = ["--check", *(["-e", json.dumps(extra)] if extra else [])]
    return run_playbook(
        tmp_path,
        f"- hosts: {play_hosts}\n  gather_facts: false\n  roles:\n    - role: celery_worker\n",
        *args,
        inventory=str(inventory),
    )


def assert_section(output: str) -> str:
    start = output.index(f"TASK [{ASSERT_TASK}]")
    end = output.find("TASK [", start + 1)
    return output[start : end if end != -1 else None]


def test_second_beat_host_refused_naming_both(tmp_path):
    result = run_play(
        tmp_path,
        {
            "worker-a": {"celery_worker_beat_enabled": True},
            "worker-b": {"celery_worker_beat_enabled": True},
            "worker-c": {},
        },
        "workers",
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    section = assert_section(output)
    assert "celery_worker_beat_enabled is true on 2 hosts (worker-a, worker-b)" in section, section
    assert "changed=0" in output
    assert SECRET not in output


def test_beat_host_outside_the_play_counts(tmp_path):
    # the play runs on worker-a only; the second beat host is in another group
    result = run_play(
        tmp_path,
        {
            "worker-a": {"celery_worker_beat_enabled": True},
            "beat-elsewhere": {"celery_worker_beat_enabled": "true"},
        },
        "worker-a",
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    section = assert_section(output)
    assert "2 hosts (beat-elsewhere, worker-a)" in section, section


def test_play_level_value_counts_too(tmp_path):
    # the inventory names one beat host; the play turns it on for worker-b as well
    result = run_play(
        tmp_path,
        {"worker-a": {"celery_worker_beat_enabled": True}, "worker-b": {}},
        "worker-b",
        extra={"celery_worker_beat_enabled": True},
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "2 hosts (worker-a, worker-b)" in assert_section(output)


def test_one_beat_host_passes(tmp_path):
    result = run_play(
        tmp_path,
        {
            "worker-a": {"celery_worker_beat_enabled": True},
            "worker-b": {"celery_worker_beat_enabled": False},
            "other-host": {},
        },
        "workers",
    )
    output = result.stdout + result.stderr
    section = assert_section(output)
    assert "ok: [worker-a]" in section, section
    assert "ok: [worker-b]" in section, section
    assert "failed" not in section, section
