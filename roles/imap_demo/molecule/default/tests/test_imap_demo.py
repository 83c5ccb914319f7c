"""Verify the demo IMAP server: TLS logins, seeded mailboxes, refusals, private files."""

import imaplib
import os
import shlex
from pathlib import Path

import pytest

EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])

# Runs inside the instance; the password arrives in the environment, not on a command line.
IMAP_PROBE = r"""
import imaplib, os, ssl, sys
mode, user = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
try:
    if mode == "imaps":
        conn = imaplib.IMAP4_SSL("127.0.0.1", 993, ssl_context=ctx)
    else:
        conn = imaplib.IMAP4("127.0.0.1", 143)
        if mode == "starttls":
            conn.starttls(ssl_context=ctx)
    conn.login(user, os.environ["IMAP_PASSWORD"])
except imaplib.IMAP4.error as exc:
    print("LOGIN-REFUSED", exc)
    sys.exit(0)
for box in ("INBOX", "Archive"):
    typ, data = conn.select(box, readonly=True)
    print(box, data[0].decode())
conn.logout()
"""


def password(user: str) -> str:
    return (EPHEMERAL / f"{user}_password").read_text().strip()


def probe(host, mode: str, user: str, secret: str) -> str:
    cmd = (
        f"IMAP_PASSWORD={shlex.quote(secret)} python3 -c {shlex.quote(IMAP_PROBE)} "
        f"{mode} {shlex.quote(user)}"
    )
    result = host.run(cmd)
    assert result.rc == 0, result.stderr
    return result.stdout


def test_service_enabled_and_running(host):
    service = host.service("dovecot")
    assert service.is_enabled
    assert service.is_running


@pytest.mark.parametrize("port", [143, 993])
def test_listens(host, port):
    assert host.socket(f"tcp://0.0.0.0:{port}").is_listening


@pytest.mark.parametrize("mode", ["starttls", "imaps"])
@pytest.mark.parametrize("user", ["alice", "bob"])
def test_tls_login_sees_seeded_mailboxes(host, mode, user):
    out = probe(host, mode, user, password(user))
    assert "INBOX 16" in out, out
    assert "Archive 4" in out, out


def test_plaintext_login_without_tls_is_refused(host):
    # From another machine (this controller): Dovecot counts loopback as secure.
    address = host.interface("eth0").addresses[0]
    conn = imaplib.IMAP4(address, 143, timeout=10)
    try:
        with pytest.raises(imaplib.IMAP4.error):
            conn.login("alice", password("alice"))
    finally:
        conn.shutdown()


def test_wrong_password_is_refused(host):
    out = probe(host, "starttls", "alice", "wrong-password")
    assert "LOGIN-REFUSED" in out, out


def test_users_file_holds_hashes_only(host):
    users = host.file("/etc/dovecot/imap-demo/users")
    assert users.user == "root"
    assert users.group == "dovecot"
    assert users.mode == 0o640
    content = users.content_string
    assert "alice:{SHA512-CRYPT}$6$" in content
    assert password("alice") not in content
    assert password("bob") not in content


def test_private_key_is_private(host):
    key = host.file("/etc/dovecot/imap-demo/key.pem")
    assert key.user == "root"
    assert key.mode == 0o600


def test_mail_is_owned_by_the_storage_user(host):
    maildir = host.file("/var/mail/imap-demo/alice/Maildir")
    assert maildir.user == "imapdemo"
    assert host.file("/var/mail/imap-demo").mode == 0o700
