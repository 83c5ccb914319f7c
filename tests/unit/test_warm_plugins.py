"""The callback plugin next to the playbooks loads every plugin it names in the main
process (so forked workers inherit them): none is missing or misspelt, and a run with it
still works."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def named_plugins() -> int:
    path = ROOT / "playbooks" / "callback_plugins" / "kimh_warm_plugins.py"
    spec = importlib.util.spec_from_file_location("kimh_warm_plugins", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return len(module.CONNECTIONS) + len(module.ACTIONS)


def test_every_named_plugin_loads_and_the_run_is_unchanged(tmp_path):
    (tmp_path / "callback_plugins").symlink_to(ROOT / "playbooks" / "callback_plugins")
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n"
        f"  vars: {{ansible_python_interpreter: {sys.executable}}}\n  tasks:\n"
        "    - ansible.builtin.command: {argv: [echo, warm-plugins-ran]}\n"
        "      changed_when: false\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ANSIBLE_CONFIG"}
    env |= {"ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "false"}
    result = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-vvv", str(playbook)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "warm-plugins-ran" in output, output
    # Ansible loaded the plugin next to the playbook, and it found every plugin it names.
    loaded = f"kimh_warm_plugins: {named_plugins()} plugins loaded before the first fork"
    assert loaded in output, output
    assert "not found" not in output, output
    assert "not preloaded" not in output, output
