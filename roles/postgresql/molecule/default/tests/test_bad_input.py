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
GOOD = {
    "postgresql_role_passwords": {
        "mailhelper_migrator": "good-migrator-password",
        "mailhelper_app": "good-app-password",
    }
}
CASES = {
    "missing_password": (
        {"postgresql_role_passwords": {"mailhelper_migrator": "only-one"}},
        ["postgresql_role_passwords", "mailhelper_app"],
    ),
    "port_out_of_range": ({"postgresql_port": 70000}, ["postgresql_port"]),
    "unknown_variable": ({"postgresql_prot": 5433}, ["postgresql_prot"]),
    "unknown_database_key": (
        {"postgresql_databases": [{"name": "x", "owner": "x_owner", "ownr": "typo"}]},
        ["postgresql_databases", "ownr"],
    ),
    "md5_in_hba": (
        {
            "postgresql_hba_entries": [
                {
                    "type": "hostssl",
                    "database": "all",
                    "user": "all",
                    "address": "10.0.0.0/8",
                    "method": "md5",
                }
            ]
        },
        ["postgresql_hba_entries", "md5"],
    ),
    "trust_in_hba": (
        {
            "postgresql_hba_entries": [
                {"type": "local", "database": "all", "user": "all", "method": "trust"}
            ]
        },
        ["postgresql_hba_entries", "trust"],
    ),
    "plain_host_in_hba": (
        {
            "postgresql_hba_entries": [
                {
                    "type": "host",
                    "database": "all",
                    "user": "all",
                    "address": "10.0.0.0/8",
                    "method": "scram-sha-256",
                }
            ]
        },
        ["postgresql_hba_entries", "host"],
    ),
    "peer_over_network": (
        {
            "postgresql_hba_entries": [
                {
                    "type": "hostssl",
                    "database": "all",
                    "user": "all",
                    "address": "10.0.0.0/8",
                    "method": "peer",
                }
            ]
        },
        ["postgresql_hba_entries[0]"],
    ),
}


@pytest.fixture(scope="module")
def failures(tmp_path_factory) -> dict[str, str]:
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
        "- hosts: all\n  gather_facts: false\n  roles:\n    - role: postgresql\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if k != "ANSIBLE_CALLBACKS_ENABLED"},
        "ANSIBLE_ROLES_PATH": str(ROLE_DIR.parent),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_NOCOLOR": "1",
    }
    run = subprocess.run(
        ["ansible-playbook", "-i", str(tmp / "inventory.json"), str(tmp / "play.yml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert run.returncode != 0, run.stderr
    assert "{" in run.stdout, run.stdout + run.stderr
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
    assert "unreachable" not in message.split(":", 1)[0].lower()
    assert '"unreachable": true' not in message, f"{case} got past validation: {message}"
    for word in CASES[case][1]:
        assert word in message, message
