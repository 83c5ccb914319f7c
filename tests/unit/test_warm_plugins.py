"""The callback plugin next to the playbooks loads every plugin it names in the main
process (so forked workers inherit them): none is missing or misspelt, and a run with it
still works."""

from __future__ import annotations

import importlib.util
import sys

from controller_play import ROOT, output_of, run_playbook


def named_plugins() -> int:
    path = ROOT / "playbooks" / "callback_plugins" / "kimh_warm_plugins.py"
    spec = importlib.util.spec_from_file_location("kimh_warm_plugins", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return len(module.CONNECTIONS) + len(module.ACTIONS) + len(module.LOOKUPS) + len(module.JINJA)


def test_every_named_plugin_loads_and_the_run_is_unchanged(tmp_path):
    (tmp_path / "callback_plugins").symlink_to(ROOT / "playbooks" / "callback_plugins")
    result = run_playbook(
        tmp_path,
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n"
        f"  vars: {{ansible_python_interpreter: {sys.executable}}}\n  tasks:\n"
        "    - ansible.builtin.command: {argv: [echo, warm-plugins-ran]}\n"
        "      changed_when: false\n",
        "-vvv",
    )
    output = output_of(result)
    assert result.returncode == 0, output
    assert "warm-plugins-ran" in output, output
    # Ansible loaded the plugin next to the playbook, and it found every plugin it names.
    loaded = f"kimh_warm_plugins: {named_plugins()} plugins loaded before the first fork"
    assert loaded in output, output
    assert "not found" not in output, output
    assert "not preloaded" not in output, output
