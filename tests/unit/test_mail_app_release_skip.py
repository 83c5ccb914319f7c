"""The mail_app `release` entry point skips its steps on a host where this run already
applied the same release and settings (the web app's `main`, or an earlier `release`), and
runs them when any mail_app_ setting differs. Only the AppRole credentials, which `release`
never writes, are left out of the comparison.

Runs on the controller (connection local); nothing is installed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from controller_play import ROOT, output_of, run_playbook

ROLE = ROOT / "roles" / "mail_app"


def run_ok(tmp_path: Path, text: str) -> str:
    result = run_playbook(tmp_path, text)
    assert result.returncode == 0, output_of(result)
    return output_of(result)


def test_the_key_changes_with_every_setting_but_the_credentials(tmp_path):
    output = run_ok(
        tmp_path,
        f"""- hosts: localhost
  connection: local
  gather_facts: false
  vars_files: ["{ROLE}/defaults/main.yml", "{ROLE}/vars/main.yml"]
  vars:
    role_path: "{ROLE}"
    mail_app_vault_role_id: role-a
    mail_app_vault_secret_id: secret-a
    mail_app_vault_migrator_role_id: migrator-a
    mail_app_vault_migrator_secret_id: migrator-secret-a
  tasks:
    - ansible.builtin.set_fact:
        k_base: "{{{{ __mail_app_settings_key }}}}"
    - ansible.builtin.set_fact:
        k_creds: "{{{{ __mail_app_settings_key }}}}"
      vars:
        mail_app_vault_secret_id: secret-b
        mail_app_vault_migrator_secret_id: migrator-secret-b
    - ansible.builtin.set_fact:
        k_port: "{{{{ __mail_app_settings_key }}}}"
      vars:
        mail_app_listen_port: 8123
    - ansible.builtin.set_fact:
        k_module: "{{{{ __mail_app_settings_key }}}}"
      vars:
        mail_app_legacy_module: absent
    - ansible.builtin.set_fact:
        k_pinned: "{{{{ __mail_app_settings_key }}}}"
      vars:
        mail_app_release: 0.0.9-abc
    - ansible.builtin.debug:
        msg: "KEYS {{{{ {{'base': k_base, 'creds': k_creds, 'port': k_port,
                         'module': k_module, 'pinned': k_pinned}} | to_json }}}}"
""",
    )
    keys = json.loads(re.search(r"KEYS (\{.*?\})", output).group(1).replace('\\"', '"'))
    assert re.fullmatch(r"[0-9a-f]{64}", keys["base"]), keys
    assert keys["creds"] == keys["base"]
    for other in ("port", "module", "pinned"):
        assert keys[other] != keys["base"], (other, keys)


RELEASE_PLAY = """- hosts: localhost
  connection: local
  gather_facts: false
  vars_files: ["{role}/defaults/main.yml", "{role}/vars/main.yml"]
  vars:
    role_path: "{role}"
    mail_app_vault_addr: https://vault.example:8200
  tasks:
    - name: What an earlier entry point of this run applied
      ansible.builtin.set_fact:
        __mail_app_applied: "{{{{ __mail_app_settings_key }}}}"
    - name: The release entry point
      ansible.builtin.include_role:
        name: mail_app
        tasks_from: release
      vars:
        mail_app_listen_port: {port}
"""


def test_release_skips_its_steps_when_this_run_applied_the_same_settings(tmp_path):
    default_port = re.search(
        r"^mail_app_listen_port: (\d+)", (ROLE / "defaults" / "main.yml").read_text(), re.M
    ).group(1)
    output = run_ok(tmp_path, RELEASE_PLAY.format(role=ROLE, port=default_port))
    start = output.index("TASK [mail_app : Install the release, write its configuration")
    assert "skipping: [localhost]" in output[start:], output
    assert "mail_app : Check the values argument_specs cannot check" not in output, output
    assert "mail_app : Look for the web unit" not in output, output


def test_release_runs_its_steps_when_a_setting_differs(tmp_path):
    # Port 70000 passes argument_specs (an int) but not the role's own checks: reaching
    # that check proves the steps ran; failing there keeps anything from being installed.
    result = run_playbook(tmp_path, RELEASE_PLAY.format(role=ROLE, port=70000))
    output = output_of(result)
    assert result.returncode != 0, output
    assert "mail_app_listen_port must be between 1 and 65535" in output, output
