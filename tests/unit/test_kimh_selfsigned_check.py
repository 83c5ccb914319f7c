"""The kimh_selfsigned_check module (roles/kimh_files), on the controller itself: it agrees
with the community.crypto tasks the roles run (a key and certificate they made are
`current`; after any change those tasks would act on, it is not), names what is wrong, and
refuses bad input."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from controller_play import SHOW_RESULT, output_of, registered_result, run_playbook

SANS = ["DNS:db.example", "DNS:localhost", "IP:127.0.0.1", "IP:::1"]


def make_with_community_crypto(tmp_path: Path, sans: list[str], days: int = 30) -> None:
    """Key and self-signed certificate exactly as roles/postgresql/tasks/ssl.yml makes them."""
    play = f"""
- hosts: localhost
  connection: local
  gather_facts: false
  vars: {{ansible_python_interpreter: {sys.executable}}}
  tasks:
    - community.crypto.openssl_privatekey:
        path: {tmp_path}/server.key
        type: ECC
        curve: secp384r1
        mode: "0600"
    - community.crypto.openssl_csr_pipe:
        privatekey_path: {tmp_path}/server.key
        common_name: db.example
        subject_alt_name: {json.dumps(sans)}
      register: csr
    - community.crypto.x509_certificate:
        path: {tmp_path}/server.crt
        csr_content: "{{{{ csr.csr }}}}"
        privatekey_path: {tmp_path}/server.key
        provider: selfsigned
        selfsigned_not_after: "+{days}d"
        mode: "0644"
"""
    result = run_playbook(tmp_path, play)
    assert result.returncode == 0, output_of(result)


def check(tmp_path: Path, sans: list[str] | None = None) -> dict:
    play = f"""
- hosts: localhost
  connection: local
  gather_facts: false
  vars: {{ansible_python_interpreter: {sys.executable}}}
  roles: [kimh_files]
  tasks:
    - name: Check
      kimh_selfsigned_check:
        key_path: {tmp_path}/server.key
        cert_path: {tmp_path}/server.crt
        curve: secp384r1
        common_name: db.example
        subject_alt_name: {json.dumps(sans or SANS)}
        key_owner: "{os.getuid()}"
        key_group: "{os.getgid()}"
        cert_owner: "{os.getuid()}"
        cert_group: "{os.getgid()}"
      register: out
"""
    play += SHOW_RESULT
    result = run_playbook(tmp_path, play)
    return registered_result(result)


def test_what_community_crypto_made_is_current(tmp_path: Path) -> None:
    make_with_community_crypto(tmp_path, SANS)
    result = check(tmp_path)
    assert result["current"] is True, result["reasons"]
    assert result["changed"] is False
    assert "PRIVATE KEY" not in json.dumps(result)


def test_another_san_list_needs_work(tmp_path: Path) -> None:
    make_with_community_crypto(tmp_path, SANS)
    result = check(tmp_path, [*SANS, "DNS:extra.example"])
    assert result["current"] is False
    assert result["reasons"] == [
        f"{tmp_path}/server.crt: subject alternative names "
        f"{SANS}, wanted {[*SANS, 'DNS:extra.example']}"
    ]
    assert check(tmp_path, list(reversed(SANS)))["current"] is False


def test_a_certificate_of_another_key_needs_work(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    make_with_community_crypto(other, SANS)
    make_with_community_crypto(tmp_path, SANS)
    (tmp_path / "server.crt").write_bytes((other / "server.crt").read_bytes())
    result = check(tmp_path)
    assert result["reasons"] == [f"{tmp_path}/server.crt: holds another key's public key"]


def test_key_mode_missing_files_and_garbage_need_work(tmp_path: Path) -> None:
    make_with_community_crypto(tmp_path, SANS)
    (tmp_path / "server.key").chmod(0o640)
    assert check(tmp_path)["reasons"] == [f"{tmp_path}/server.key: mode 0640, wanted 0600"]
    (tmp_path / "server.key").chmod(0o600)
    (tmp_path / "server.crt").write_text("not a certificate\n")
    reasons = check(tmp_path)["reasons"]
    assert reasons == [f"{tmp_path}/server.crt: not a readable PEM certificate (ValueError)"]
    (tmp_path / "server.crt").unlink()
    assert check(tmp_path)["reasons"] == [f"{tmp_path}/server.crt is missing"]


def test_an_expired_certificate_needs_work(tmp_path: Path) -> None:
    make_with_community_crypto(tmp_path, SANS, days=0)
    reasons = check(tmp_path)["reasons"]
    assert len(reasons) == 1
    assert reasons[0].startswith(f"{tmp_path}/server.crt: not valid now")


def test_a_malformed_san_is_refused_naming_it(tmp_path: Path) -> None:
    make_with_community_crypto(tmp_path, SANS)
    result = check(tmp_path, ["URI:https://x"])
    assert (
        "subject_alt_name: 'URI:https://x' is neither DNS:<name> nor IP:<address>"
        in (result["failed_output"])
    )
