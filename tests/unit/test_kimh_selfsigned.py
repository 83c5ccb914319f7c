"""The kimh_selfsigned module (roles/kimh_files), on the controller itself.

Checking (make: false): it agrees with the community.crypto tasks the roles ran before it (a
key and certificate they made are `current`, so existing hosts keep theirs; after any change
those tasks would act on, it is not), names what is wrong, and refuses bad input.
Making: it makes a key and certificate that openssl verifies for the host name, keeps the
key when only the certificate is wrong, mends only the mode when only that is wrong, writes
nothing in check mode, and refuses to replace a symlink."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from controller_play import SHOW_RESULT, output_of, registered_result, run_playbook

SANS = ["DNS:db.example", "DNS:localhost", "IP:127.0.0.1", "IP:::1"]


def make_with_community_crypto(tmp_path: Path, sans: list[str], days: int = 30) -> None:
    """Key and self-signed certificate as the postgresql role made them with community.crypto
    before kimh_selfsigned (hosts deployed then keep theirs)."""
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
    return selfsigned(tmp_path, sans, make=False)


def selfsigned(
    tmp_path: Path, sans: list[str] | None = None, *args: str, make: bool = True
) -> dict:
    play = f"""
- hosts: localhost
  connection: local
  gather_facts: false
  vars: {{ansible_python_interpreter: {sys.executable}}}
  roles: [kimh_files]
  tasks:
    - name: Check or make
      kimh_selfsigned:
        key_path: {tmp_path}/server.key
        cert_path: {tmp_path}/server.crt
        curve: secp384r1
        common_name: db.example
        subject_alt_name: {json.dumps(sans or SANS)}
        key_owner: "{os.getuid()}"
        key_group: "{os.getgid()}"
        cert_owner: "{os.getuid()}"
        cert_group: "{os.getgid()}"
        valid_days: 30
        make: {str(make).lower()}
      register: out
"""
    play += SHOW_RESULT
    result = run_playbook(tmp_path, play, *args)
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


def openssl_verifies(tmp_path: Path, hostname: str) -> str:
    """openssl's own verdict on server.crt as its own trust anchor, for `hostname`."""
    crt = str(tmp_path / "server.crt")
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", crt, "-verify_hostname", hostname, crt],
        capture_output=True,
        text=True,
        check=False,
    )
    return (result.stdout + result.stderr).strip()


def test_makes_a_key_and_certificate_openssl_verifies_then_keeps_them(tmp_path: Path) -> None:
    made = selfsigned(tmp_path)
    assert made["changed"] is True, made
    assert made["done"] == ["new key", "new certificate"]
    assert made["current"] is False  # what it found, before making
    assert openssl_verifies(tmp_path, "db.example").endswith(": OK")
    assert "hostname mismatch" in openssl_verifies(tmp_path, "other.example")
    assert (tmp_path / "server.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "server.crt").stat().st_mode & 0o777 == 0o644
    assert "PRIVATE KEY" not in json.dumps(made)
    again = selfsigned(tmp_path)
    assert (again["changed"], again["current"], again["done"]) == (False, True, [])
    assert check(tmp_path)["current"] is True


def test_a_changed_san_list_gets_a_new_certificate_for_the_same_key(tmp_path: Path) -> None:
    make_with_community_crypto(tmp_path, SANS)
    key = (tmp_path / "server.key").read_bytes()
    wider = [*SANS, "DNS:extra.example"]
    made = selfsigned(tmp_path, wider)
    assert made["done"] == ["new certificate"], made
    assert (tmp_path / "server.key").read_bytes() == key
    assert openssl_verifies(tmp_path, "extra.example").endswith(": OK")
    assert selfsigned(tmp_path, wider)["changed"] is False


def test_only_the_mode_is_mended_when_only_the_mode_is_wrong(tmp_path: Path) -> None:
    selfsigned(tmp_path)
    key, crt = (tmp_path / "server.key").read_bytes(), (tmp_path / "server.crt").read_bytes()
    (tmp_path / "server.key").chmod(0o644)
    made = selfsigned(tmp_path)
    assert made["done"] == ["key owner/mode"], made
    assert (tmp_path / "server.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "server.key").read_bytes() == key
    assert (tmp_path / "server.crt").read_bytes() == crt


def test_a_garbage_key_is_replaced_along_with_its_certificate(tmp_path: Path) -> None:
    selfsigned(tmp_path)
    (tmp_path / "server.key").write_text("not a key\n")
    made = selfsigned(tmp_path)
    assert made["done"] == ["new key", "new certificate"], made
    assert openssl_verifies(tmp_path, "db.example").endswith(": OK")


def test_an_expired_certificate_is_made_anew(tmp_path: Path) -> None:
    make_with_community_crypto(tmp_path, SANS, days=0)
    made = selfsigned(tmp_path)
    assert made["done"] == ["new certificate"], made
    assert openssl_verifies(tmp_path, "db.example").endswith(": OK")


def test_check_mode_and_make_false_write_nothing(tmp_path: Path) -> None:
    would = selfsigned(tmp_path, None, "--check")
    assert (would["changed"], would["done"]) == (True, ["new key", "new certificate"])
    assert not (tmp_path / "server.key").exists()
    reported = check(tmp_path)
    assert reported["changed"] is False
    assert reported["reasons"] == [
        f"{tmp_path}/server.key is missing",
        f"{tmp_path}/server.crt is missing",
    ]
    assert not (tmp_path / "server.key").exists()


def test_a_symlink_in_place_of_the_key_is_refused_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.key"
    target.write_text("kept\n")
    (tmp_path / "server.key").symlink_to(target)
    result = selfsigned(tmp_path)
    assert f"{tmp_path}/server.key exists and is not a regular file" in result["failed_output"]
    assert target.read_text() == "kept\n"
