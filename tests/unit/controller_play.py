"""Run a playbook on the controller, the way the tests in this directory need it: the
bundle's roles on the roles path, and neither the project's ansible.cfg nor an inventory's
group_vars filling in what a test leaves out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def run_playbook(
    tmp_path: Path,
    text: str,
    *args: str,
    inventory: str = "localhost,",
    timeout: int = 180,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Write `text` to tmp_path/play.yml and run it with `args` (e.g. --check, -e ...),
    with `extra_env` (e.g. ANSIBLE_STRATEGY) on top of the environment below."""
    playbook = tmp_path / "play.yml"
    playbook.write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "ANSIBLE_CONFIG"}
    env |= {
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
    }
    env |= extra_env or {}
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", inventory, *args, str(playbook)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
        timeout=timeout,
    )


def output_of(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


# A task a test wants to see the result of ends its play with this one (register: out).
SHOW_RESULT = """    - name: Show
      ansible.builtin.debug: {msg: "RESULT={{ out | to_json }}"}
"""


def registered_result(result: subprocess.CompletedProcess[str]) -> dict:
    """The `out` a play with SHOW_RESULT registered, or {"failed_output": ...} if it failed."""
    output = output_of(result)
    if result.returncode != 0:
        return {"failed_output": output}
    line = next(x for x in output.splitlines() if '"msg": "RESULT=' in x)
    return json.loads(json.loads(line.split('"msg": ', 1)[1]).removeprefix("RESULT="))
