"""Bad input must stop the role at its start, with a message that names the variable.

One ansible-playbook run on the controller against several fake hosts, one mistake each.
The hosts point at a closed local port, so nothing is ever changed anywhere even if the
validation let a mistake through (the first real task would then fail as unreachable).
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROLE_DIR = Path(__file__).resolve().parents[3]
SECRET = "fake-secret-id-must-never-show-8d1f"
GOOD = {
    "mail_app_vault_addr": "https://vault.example:8200",
    "mail_app_vault_role_id": "fake-role-id",
    "mail_app_vault_secret_id": SECRET,
    "mail_app_vault_migrator_role_id": "fake-migrator-role-id",
    "mail_app_vault_migrator_secret_id": SECRET + "-migrator",
}
CASES = {
    "missing_secret_id": ({"mail_app_vault_secret_id": ""}, ["mail_app_vault_secret_id"]),
    "missing_migrator_secret_id": (
        {"mail_app_vault_migrator_secret_id": ""},
        ["mail_app_vault_migrator_secret_id"],
    ),
    "migrator_is_the_app": (
        {"mail_app_vault_migrator_role_id": "fake-role-id"},
        ["mail_app_vault_migrator_role_id"],
    ),
    "vault_addr_not_url": ({"mail_app_vault_addr": "vault:8200"}, ["mail_app_vault_addr"]),
    "port_out_of_range": ({"mail_app_listen_port": 70000}, ["mail_app_listen_port"]),
    "unknown_variable": ({"mail_app_listen_prot": 8001}, ["mail_app_listen_prot"]),
    "keep_one_release": ({"mail_app_keep_releases": 1}, ["mail_app_keep_releases"]),
    "fallback_without_celery": (
        {"mail_app_use_legacy_jobs": True, "mail_app_legacy_fallback": True},
        ["mail_app_legacy_fallback"],
    ),
    "secret_key_in_extra_config": (
        {"mail_app_extra_config": {"SECRET_KEY": "x"}},
        ["mail_app_extra_config", "SECRET_KEY"],
    ),
    "bad_sslmode": ({"mail_app_db_sslmode": "sometimes"}, ["mail_app_db_sslmode"]),
    "verify_full_without_ca": (
        {"mail_app_db_sslmode": "verify-full"},
        ["mail_app_db_sslrootcert"],
    ),
    "db_user_not_identifier": ({"mail_app_db_user": "app;drop"}, ["mail_app_db_user"]),
    "state_dir_outside_var_lib": ({"mail_app_state_dir": "/srv/mh"}, ["mail_app_state_dir"]),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> subprocess.CompletedProcess:
    tmp = tmp_path_factory.mktemp("bad_input")
    hosts = {}
    for name, (override, _) in CASES.items():
        hosts[name] = {
            "ansible_connection": "ansible.builtin.ssh",
            "ansible_host": "127.0.0.1",
            "ansible_port": 9,
            **GOOD,
            **override,
        }
    (tmp / "inventory.json").write_text(json.dumps({"all": {"hosts": hosts}}))
    (tmp / "play.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  roles:\n    - role: mail_app\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if k != "ANSIBLE_CALLBACKS_ENABLED"},
        "ANSIBLE_ROLES_PATH": str(ROLE_DIR.parent),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_NOCOLOR": "1",
    }
    result = subprocess.run(
        ["ansible-playbook", "-i", str(tmp / "inventory.json"), str(tmp / "play.yml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0, result.stderr
    assert "{" in result.stdout, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def failures(run) -> dict[str, str]:
    # raw_decode: a timer callback may print a line after the JSON document
    report, _ = json.JSONDecoder().raw_decode(run.stdout[run.stdout.index("{") :])
    found: dict[str, str] = {}
    for task in report["plays"][0]["tasks"]:
        for name, result in task["hosts"].items():
            if (result.get("failed") or result.get("unreachable")) and name not in found:
                found[name] = f"{task['task']['name']}: {json.dumps(result)}"
    return found


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_at_the_start_naming_the_variable(failures, case):
    message = failures.get(case, "")
    assert message, f"{case} was not refused"
    assert '"unreachable": true' not in message, f"{case} got past validation: {message}"
    for word in CASES[case][1]:
        assert word in message, message


def test_secret_never_in_the_output(run):
    assert SECRET not in run.stdout
    assert SECRET not in run.stderr
