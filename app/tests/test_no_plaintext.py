"""The database never holds plaintext subject, sender, body, IMAP password or data key."""

from __future__ import annotations

import base64
import secrets

from mailhelper.crypto import key_context
from mailhelper.models import User
from mailhelper.runtime import Runtime
from sqlalchemy import select

from tests.conftest import make_mailbox
from tests.servers import DovecotServer, PostgresServer


def test_dump_contains_no_known_plaintext(
    runtime: Runtime, dovecot: DovecotServer, pg: PostgresServer
) -> None:
    box = make_mailbox(runtime, dovecot)
    marker = secrets.token_hex(8)
    subject = f"Quarterly numbers {marker}S"
    sender = f"Canary Sender {marker}F <canary-{marker}@example.org>"
    body = f"The secret body text {marker}B\r\n"
    raw = (
        f"From: {sender}\r\nTo: x@example.net\r\nSubject: {subject}\r\n"
        f"Message-ID: <{marker}@example.org>\r\n\r\n{body}"
    ).encode()
    box.append(raw)
    assert runtime.sync.sync_account(box.account_id).new == 1
    with runtime.sessions() as s:
        user = s.scalar(select(User).where(User.id == box.user_id))
        data_key = runtime.keys.unwrap(user.wrapped_key, key_context(user.key_id))
    dbname = runtime.settings.database_url.rsplit("/", 1)[1]
    dump = pg.dump(dbname)
    assert f"<{marker}@example.org>".encode() in dump  # the dump is real: Message-ID is plain
    for secret in (
        subject.encode(),
        f"{marker}S".encode(),
        f"{marker}F".encode(),
        f"{marker}B".encode(),
        box.imap_password.encode(),
        box.imap_user.encode(),
        data_key,
        data_key.hex().encode(),
        base64.b64encode(data_key),
    ):
        assert secret not in dump
