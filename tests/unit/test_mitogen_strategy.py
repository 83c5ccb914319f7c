"""The bundle's strategy (ansible.cfg: mitogen_linear, playbooks/strategy_plugins/): tasks run
in one long-lived interpreter per host, where plain `linear` starts one per task; and without
the mitogen package the error says what to do."""

from __future__ import annotations

import subprocess
import sys

from controller_play import ROOT, output_of, run_playbook

STRATEGY_PLUGINS = ROOT / "playbooks" / "strategy_plugins"

# Three tasks print the process that ran their command: the interpreter that ran the module.
PLAY = (
    "- hosts: localhost\n  connection: local\n  gather_facts: false\n"
    f"  vars: {{ansible_python_interpreter: {sys.executable}}}\n  tasks:\n"
    + "".join(
        f"    - name: Parent {i}\n"
        "      ansible.builtin.command: {argv: [sh, -c, 'echo PARENT=$PPID']}\n"
        "      register: out\n      changed_when: false\n"
        f'    - ansible.builtin.debug: {{msg: "{{{{ out.stdout }}}}"}}\n'
        for i in range(3)
    )
)


def parents(tmp_path, strategy: str) -> list[str]:
    result = run_playbook(
        tmp_path,
        PLAY,
        extra_env={"ANSIBLE_STRATEGY_PLUGINS": str(STRATEGY_PLUGINS), "ANSIBLE_STRATEGY": strategy},
    )
    output = output_of(result)
    assert result.returncode == 0, output
    found = [
        line.split("PARENT=", 1)[1].strip('" ')
        for line in output.splitlines()
        if '"msg": "PARENT=' in line
    ]
    assert len(found) == 3, output
    return found


def test_mitogen_runs_every_task_in_one_interpreter(tmp_path):
    assert len(set(parents(tmp_path, "mitogen_linear"))) == 1


def test_plain_linear_starts_an_interpreter_per_task(tmp_path):
    # The comparison that gives the test above its meaning.
    assert len(set(parents(tmp_path, "linear"))) == 3


def test_without_the_mitogen_package_the_error_says_what_to_do():
    # The shim imported with ansible_mitogen made unimportable, as in a venv without it.
    code = (
        "import sys, runpy\n"
        "sys.modules['ansible_mitogen'] = None\n"
        f"runpy.run_path({str(STRATEGY_PLUGINS / 'mitogen_linear.py')!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert "AnsibleError" in done.stderr, done.stderr
    assert "make setup" in done.stderr, done.stderr
    assert "ANSIBLE_STRATEGY=linear" in done.stderr, done.stderr
