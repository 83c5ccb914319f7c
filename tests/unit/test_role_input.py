"""Bad role input fails at the start of the play, with a message that names the variable
and never the secret.

Each case applies one role to the controller in check mode with a vars file; validation
must stop the play before its first real task, so nothing is ever installed here.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from controller_play import run_playbook

PASSWORD = "a-test-password-0123456789"
SECRET_ID = "fake-secret-id-must-never-show-77e1"
GOOD = {
    "redis": {"redis_app_password": PASSWORD},
    "imap_demo": {"imap_demo_users": [{"name": "demo", "password": PASSWORD}]},
    "celery_worker": {
        "celery_worker_vault_role_id": "fake-role-id",
        "celery_worker_vault_secret_id": SECRET_ID,
        "celery_worker_install_release": False,
    },
    "flower": {
        "flower_vault_role_id": "fake-role-id",
        "flower_vault_secret_id": SECRET_ID,
        "flower_install_release": False,
    },
}

# (role, variables layered over the good ones (None removes one), text the failure must show)
CASES = [
    ("redis", {"redis_app_password": None}, "redis_app_password"),
    ("redis", {"redis_app_password": ""}, "redis_app_password must not be empty"),
    ("redis", {"redis_port": 70000}, "redis_port must be between 1 and 65535"),
    ("redis", {"redis_port": "six"}, "redis_port"),
    ("redis", {"redis_auth_mode": "plain"}, "redis_auth_mode"),
    ("redis", {"redis_bind": []}, "redis_bind must name at least one address"),
    ("redis", {"redis_passwrod": "x"}, "Unknown redis role variable(s): redis_passwrod"),
    ("redis", {"redis_app_user": "bad user"}, "redis_app_user may hold only"),
    ("imap_demo", {"imap_demo_users": None}, "imap_demo_users"),
    ("imap_demo", {"imap_demo_users": []}, "imap_demo_users must list at least one user"),
    ("imap_demo", {"imap_demo_users": [{"name": "demo"}]}, "password"),
    (
        "imap_demo",
        {"imap_demo_users": [{"name": "a b", "password": "x"}]},
        "every name may hold only",
    ),
    ("imap_demo", {"imap_demo_imaps_port": 143}, "must differ"),
    ("imap_demo", {"imap_demo_mesages_per_user": 3}, "imap_demo_mesages_per_user"),
    ("celery_worker", {"celery_worker_vault_secret_id": None}, "celery_worker_vault_secret_id"),
    ("celery_worker", {"celery_worker_vault_secret_id": ""}, "celery_worker_vault_secret_id must"),
    (
        "celery_worker",
        {"celery_worker_concurrency": 0},
        "celery_worker_concurrency must be at least",
    ),
    ("celery_worker", {"celery_worker_loglevel": "LOUD"}, "celery_worker_loglevel"),
    (
        "celery_worker",
        {"celery_worker_stop_margin": 1},
        "celery_worker_stop_margin must be at least",
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
    # An inventory of just localhost: the local inventory's group_vars must not fill in
    # what a case leaves out.
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(variables))
    return run_playbook(
        tmp_path,
        f"- hosts: localhost\n  connection: local\n  gather_facts: false\n"
        f"  roles:\n    - role: {role}\n",
        "--check",
        "-e",
        f"@{vars_file}",
        timeout=120,
    )


def layered(role: str, change: dict) -> dict:
    merged = {**GOOD[role], **change}
    return {k: v for k, v in merged.items() if v is not None}


@pytest.mark.parametrize(("role", "change", "message"), CASES)
def test_bad_input_fails_first_and_names_the_variable(tmp_path, role, change, message):
    result = run_role(tmp_path, role, layered(role, change))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert message in output, output
    # Validation comes first: no task after it may have run.
    assert "changed=0" in output, output
    assert f"{role} : Install" not in output, output
    assert f"{role} : Write" not in output, output
    assert PASSWORD not in output
    assert SECRET_ID not in output


def test_bad_input_never_echoes_a_password(tmp_path):
    result = run_role(tmp_path, "redis", layered("redis", {"redis_port": 0}))
    assert result.returncode != 0
    assert PASSWORD not in result.stdout + result.stderr


def test_good_input_passes_validation(tmp_path):
    result = run_role(tmp_path, "redis", GOOD["redis"])
    output = result.stdout + result.stderr
    start = output.index("TASK [redis : Refuse unknown redis_* variables")
    end = output.index("TASK [", start + 1)
    assert "ok: [localhost]" in output[start:end], output
