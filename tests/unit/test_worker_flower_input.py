"""Bad input to the celery_worker and flower roles fails at the start of the play, with a
message that names the variable and never the secret. Check mode on the controller,
connection local; validation stops the play before its first real task.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
SECRET = "fake-secret-id-must-never-show-77e1"
GOOD = {
    "celery_worker": {
        "celery_worker_vault_role_id": "fake-role-id",
        "celery_worker_vault_secret_id": SECRET,
        "celery_worker_install_release": False,
    },
    "flower": {
        "flower_vault_role_id": "fake-role-id",
        "flower_vault_secret_id": SECRET,
        "flower_install_release": False,
    },
}
CASES = [
    ("celery_worker", {"celery_worker_vault_secret_id": None}, "celery_worker_vault_secret_id"),
    ("celery_worker", {"celery_worker_vault_secret_id": ""}, "celery_worker_vault_secret_id must"),
    (
        "celery_worker",
        {"celery_worker_concurrency": 0},
        "celery_worker_concurrency must be at least 1",
    ),
    ("celery_worker", {"celery_worker_loglevel": "LOUD"}, "celery_worker_loglevel"),
    (
        "celery_worker",
        {"celery_worker_stop_margin": 1},
        "celery_worker_stop_margin must be at least 5",
    ),
    ("celery_worker", {"celery_worker_queue": "a,b"}, "celery_worker_queue may hold only"),
    ("celery_worker", {"celery_worker_state_dir": "/srv/w"}, "celery_worker_state_dir and"),
    ("celery_worker", {"celery_worker_concurency": 3}, "Unknown celery_worker role variable(s)"),
    ("flower", {"flower_vault_role_id": None}, "flower_vault_role_id"),
    ("flower", {"flower_port": 70000}, "flower_port must be between 1 and 65535"),
    ("flower", {"flower_url_prefix": "a b"}, "flower_url_prefix must be a URL path"),
    ("flower", {"flower_listen_address": "0.0.0.0/0"}, "flower_listen_address must be"),
    ("flower", {"flower_prot": 5556}, "Unknown flower role variable(s): flower_prot"),
]


def run_role(tmp_path: Path, role: str, variables: dict) -> subprocess.CompletedProcess:
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(variables))
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        f"- hosts: localhost\n  connection: local\n  gather_facts: false\n"
        f"  roles:\n    - role: {role}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ANSIBLE_CONFIG"}
    env |= {
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
    }
    return subprocess.run(
        [
            str(ANSIBLE_PLAYBOOK),
            "-i",
            "localhost,",
            "--check",
            "-e",
            f"@{vars_file}",
            str(playbook),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize(("role", "change", "message"), CASES)
def test_bad_input_fails_first_and_names_the_variable(tmp_path, role, change, message):
    merged = {**GOOD[role], **change}
    result = run_role(tmp_path, role, {k: v for k, v in merged.items() if v is not None})
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert message in output, output
    assert "changed=0" in output, output
    assert f"{role} : Write" not in output, output
    assert SECRET not in output
