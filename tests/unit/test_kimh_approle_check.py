"""The kimh_approle_check module (playbooks/library), run on the controller itself: it puts the
Vault CA in place only when it differs, answers `valid: false` naming what is missing, and
returns an unreachable server as an `error` naming the address (the play shows it; the task
itself is no_log). The login against a real Vault is covered by the stack scenario
(tests/stack/test_10_deploy.py: a refused secret_id is replaced)."""

from __future__ import annotations

import datetime
import socket
import sys
from pathlib import Path

from controller_play import ROOT, SHOW_RESULT, registered_result, run_playbook
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode().strip()


CA_PEM = self_signed_pem()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check(tmp_path: Path, *args: str, addr: str | None = None, ca: str = "") -> dict:
    """Run the module once on localhost; its registered result."""
    addr = addr or f"https://127.0.0.1:{free_port()}"
    play = f"""
- hosts: localhost
  connection: local
  gather_facts: false
  vars: {{ansible_python_interpreter: {sys.executable}}}
  tasks:
    - name: Check
      kimh_approle_check:
        vault_addr: "{addr}"
        ca_pem: "{{{{ lookup('ansible.builtin.file', '{tmp_path}/ca.pem') }}}}"
        ca_path: {tmp_path}/trust/vault-ca.crt
        role_id_path: {tmp_path}/creds/vault-role-id
        secret_id_path: {tmp_path}/creds/vault-secret-id
        timeout: 5
      register: out
"""
    play += SHOW_RESULT
    (tmp_path / "ca.pem").write_text((ca or CA_PEM) + "\n")
    result = run_playbook(tmp_path, play, "-M", str(ROOT / "playbooks" / "library"), *args)
    return registered_result(result)


def test_missing_credentials_are_an_answer_and_the_ca_is_written_once(tmp_path: Path) -> None:
    (tmp_path / "trust").mkdir()
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "vault-role-id").write_text("a-role-id\n")
    first = check(tmp_path)
    assert first["changed"] is True
    assert first["valid"] is False
    assert "error" not in first
    assert first["reason"] == f"missing or empty: {tmp_path}/creds/vault-secret-id"
    assert "role_id" not in first
    ca = tmp_path / "trust" / "vault-ca.crt"
    assert ca.read_text() == CA_PEM + "\n"
    assert ca.stat().st_mode & 0o7777 == 0o644
    second = check(tmp_path)
    assert second["changed"] is False
    ca.chmod(0o600)
    assert check(tmp_path)["changed"] is True
    assert ca.stat().st_mode & 0o7777 == 0o644


def test_check_mode_writes_no_ca(tmp_path: Path) -> None:
    (tmp_path / "trust").mkdir()
    result = check(tmp_path, "--check")
    assert result["changed"] is True
    assert result["valid"] is False
    assert not (tmp_path / "trust" / "vault-ca.crt").exists()


def test_an_unreachable_vault_is_an_error_naming_the_address(tmp_path: Path) -> None:
    (tmp_path / "trust").mkdir()
    (tmp_path / "creds").mkdir()
    for name in ("vault-role-id", "vault-secret-id"):
        (tmp_path / "creds" / name).write_text("x\n")
    addr = f"https://127.0.0.1:{free_port()}"
    result = check(tmp_path, addr=addr)
    assert result["valid"] is False
    assert result["error"].startswith(f"no answer from {addr}/v1/auth/approle/login"), result
    assert "refused" in result["error"].lower()


def test_a_missing_trust_store_directory_is_an_error_naming_it(tmp_path: Path) -> None:
    result = check(tmp_path)
    assert (
        result["error"]
        == f"{tmp_path}/trust does not exist on the host (is ca-certificates installed?)"
    )


def test_an_address_that_is_not_http_is_refused(tmp_path: Path) -> None:
    (tmp_path / "trust").mkdir()
    result = check(tmp_path, addr="file:///etc/passwd")
    assert "vault_addr must be an http(s) URL, not 'file:///etc/passwd'" in result["failed_output"]


def test_a_malformed_ca_is_an_error_naming_ca_pem(tmp_path: Path) -> None:
    (tmp_path / "trust").mkdir()
    (tmp_path / "creds").mkdir()
    for name in ("vault-role-id", "vault-secret-id"):
        (tmp_path / "creds" / name).write_text("x\n")
    result = check(tmp_path, ca="not a certificate")
    assert result["error"].startswith("ca_pem is not a usable CA certificate"), result
