"""Error classification with real faults: wrong password, unknown host, refused, timeout,
dropped connection, untrusted certificate, missing STARTTLS."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
from mailhelper.accounts import ImapSettings, add_account, update_account
from mailhelper.errors import (
    AccountDisabledError,
    AuthenticationError,
    ConnectionDroppedError,
    ImapTLSError,
    PermanentSyncError,
    SyncTimeoutError,
    TransientSyncError,
    UnknownHostError,
)
from mailhelper.imap import connect
from mailhelper.models import MailAccount, User
from mailhelper.runtime import Runtime
from sqlalchemy import select

from tests.conftest import Mailbox
from tests.servers import DovecotServer


def answer_without_starttls(conn: socket.socket) -> None:
    """A minimal IMAP server whose capabilities lack STARTTLS."""
    conn.sendall(b"* OK ready\r\n")
    with contextlib.suppress(OSError):
        for line in conn.makefile("rb"):
            tag = line.split(b" ", 1)[0]
            conn.sendall(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")


@pytest.fixture
def silent_server() -> Iterator[tuple[int, str]]:
    """A TCP server that accepts and then either says nothing or hangs up."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns: list[socket.socket] = []
    stop = threading.Event()
    mode = {"value": "silent"}

    def loop() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            if mode["value"] == "hangup":
                conn.sendall(b"* OK ready\r\n")
                conn.close()
            elif mode["value"] == "nostarttls":
                threading.Thread(target=answer_without_starttls, args=(conn,), daemon=True).start()
                conns.append(conn)
            else:
                conns.append(conn)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield srv.getsockname()[1], mode  # type: ignore[misc]
    stop.set()
    t.join()
    srv.close()
    for c in conns:
        c.close()


def settings_for(
    port: int, tls: str = "none", host: str = "127.0.0.1", pw: str = "x"
) -> ImapSettings:
    return ImapSettings(host=host, port=port, tls_mode=tls, username="u", password=pw)


def test_wrong_password_is_permanent_and_disables_the_account(
    runtime: Runtime, mailbox: Mailbox
) -> None:
    with runtime.sessions() as s:
        user = s.get(User, mailbox.user_id)
        account = s.get(MailAccount, mailbox.account_id)
        update_account(s, runtime.ciphers, user, account, password="wrong-password")
    with pytest.raises(AuthenticationError, match="rejected the login") as info:
        runtime.sync.sync_account(mailbox.account_id)
    assert isinstance(info.value, PermanentSyncError)
    with runtime.sessions() as s:
        acc = s.get(MailAccount, mailbox.account_id)
        assert (acc.sync_enabled, acc.last_error_kind) == (False, "permanent")
    # no retry storm: the next scheduled run does not even connect
    with pytest.raises(AccountDisabledError):
        runtime.sync.sync_account(mailbox.account_id)
    # fixing the password re-enables it
    with runtime.sessions() as s:
        user = s.get(User, mailbox.user_id)
        account = s.get(MailAccount, mailbox.account_id)
        update_account(s, runtime.ciphers, user, account, password=mailbox.imap_password)
    assert runtime.sync.sync_account(mailbox.account_id).new == 0
    with runtime.sessions() as s:
        assert s.get(MailAccount, mailbox.account_id).last_error is None


def test_unknown_host_is_permanent() -> None:
    with pytest.raises(UnknownHostError, match="does not resolve"):
        connect(settings_for(993, host="no-such-host.invalid"), ca_file=None, timeout=5)


def test_refused_connection_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionDroppedError) as info:
        connect(settings_for(port), ca_file=None, timeout=5)
    assert isinstance(info.value, TransientSyncError)


def test_silent_server_times_out_transiently(silent_server: tuple[int, dict]) -> None:
    port, _mode = silent_server
    with pytest.raises(SyncTimeoutError) as info:
        connect(settings_for(port), ca_file=None, timeout=0.5)
    assert not info.value.permanent


def test_dropped_connection_is_transient(silent_server: tuple[int, dict]) -> None:
    port, mode = silent_server
    mode["value"] = "hangup"
    with pytest.raises(ConnectionDroppedError):
        connect(settings_for(port), ca_file=None, timeout=5)


def test_untrusted_certificate_is_a_permanent_tls_error(dovecot: DovecotServer) -> None:
    user, pw = dovecot.add_user()
    with pytest.raises(ImapTLSError, match="not trusted"):
        connect(
            settings_for(dovecot.imaps_port, "implicit", "localhost", pw), ca_file=None, timeout=5
        )
    # with the CA it works, and the host name is verified as well
    client = connect(
        ImapSettings("localhost", dovecot.imaps_port, "implicit", user, pw),
        ca_file=str(dovecot.ca_file),
        timeout=5,
    )
    client.logout()


def test_tls_to_a_plain_port_and_missing_starttls(
    dovecot: DovecotServer, silent_server: tuple[int, dict]
) -> None:
    with pytest.raises(PermanentSyncError):
        connect(
            settings_for(dovecot.imap_port, "implicit", "localhost"),
            ca_file=str(dovecot.ca_file),
            timeout=5,
        )
    port, mode = silent_server
    mode["value"] = "nostarttls"
    with pytest.raises(ImapTLSError, match="does not offer STARTTLS"):
        connect(settings_for(port, "starttls"), ca_file=None, timeout=5)


def test_sync_records_transient_errors_without_disabling(
    runtime: Runtime, dovecot: DovecotServer
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with runtime.sessions() as s:
        from mailhelper.users import create_user

        user = create_user(s, runtime.ciphers, "t@example.org", "long-enough-pw")
        acc = add_account(
            s,
            runtime.ciphers,
            user,
            host="127.0.0.1",
            port=port,
            tls_mode="none",
            username="u",
            password="p",
        )
    with pytest.raises(ConnectionDroppedError):
        runtime.sync.sync_account(acc.id)
    with runtime.sessions() as s:
        row = s.scalar(select(MailAccount).where(MailAccount.id == acc.id))
        assert (row.sync_enabled, row.last_error_kind) == (True, "transient")


def test_connections_do_not_trace_protocol_data(
    dovecot: DovecotServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Mail content and passwords never reach the log, even at DEBUG level."""
    import logging

    user, pw = dovecot.add_user()
    caplog.set_level(logging.DEBUG)
    client = connect(
        ImapSettings("localhost", dovecot.imap_port, "starttls", user, pw),
        ca_file=str(dovecot.ca_file),
        timeout=5,
    )
    try:
        assert client._imap.debug == 0
        client.select_folder("INBOX")
    finally:
        client.logout()
    assert pw not in caplog.text
