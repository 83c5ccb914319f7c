# ruff: noqa: RUF001 - the ambiguous characters are the point of these texts
"""A legacy installation on SQLite written by the app's own code paths.

Alembic makes the schema; users, accounts, API tokens and login throttling come from the
app's functions; one mailbox is synced from Dovecot by the real sync (messages and a
`job_runs` row); further messages are encrypted with the user's cipher exactly as the sync
does and stored through the ORM, with binary and Unicode edge cases; `job_runs` rows of
every shape. A few thousand rows in all.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailhelper import db
from mailhelper.accounts import add_account
from mailhelper.config import load_settings
from mailhelper.models import Folder, JobRun, MailAccount, Message, User
from mailhelper.runtime import Runtime, build_runtime
from mailhelper.users import authenticate, create_user, issue_token, user_cipher, user_for_token
from sqlalchemy import insert, select

from tests.conftest import make_mailbox
from tests.mailgen import malformed, message
from tests.servers import DovecotServer

UTC = dt.UTC
TEXTS = [
    "plain ascii",
    "Grüße aus Köln – „Anführung“ ‚einfach‘",
    "日本語の件名と中文主题",
    "emoji 📬🔐👩‍👩‍👧‍👦 and a flag 🇩🇪",
    "RTL עברית العربية",
    "combining e\u0301 and zero\u200bwidth\u200d joiner",
    "line\nbreak\ttab\r\nCRLF \\N backslash-N \\ quote ' \" ,;|",
    "astral 𝄞 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and U+2028\u2028U+2029\u2029",
    "",
    "x" * 3000,
]
FOLDERS = ["Entwürfe", "文件夹/子", "emoji 📁", 'quote "x" \\ back', "Sent Items"]
DATES = [
    None,
    dt.datetime(1970, 1, 1, tzinfo=UTC),
    dt.datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC),
    dt.datetime(2026, 3, 29, 1, 59, 59, 999999, tzinfo=UTC),
    dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
]


@dataclass(frozen=True)
class LegacyInstall:
    db_file: Path
    env: dict[str, str]  # settings without DATABASE_URL: data dir, key file, IMAP CA

    def runtime(self, url: str) -> Runtime:
        return build_runtime(load_settings({**self.env, "DATABASE_URL": url}))


def _raws(rng: random.Random) -> list[bytes]:
    return [
        bytes(range(256)) * 4,
        b"",
        b"\x00" * 64,
        rng.randbytes(300_000),
        "Subject: ünïcödé\r\n\r\nkörper 📬\r\n".encode(),
    ]


def _messages(rt: Runtime, rng: random.Random, count: int) -> None:
    with rt.sessions() as session:
        users = session.scalars(select(User).order_by(User.id)).all()
        for n, user in enumerate(users):
            cipher = user_cipher(rt.ciphers, user)
            for account in session.scalars(
                select(MailAccount).where(MailAccount.user_id == user.id)
            ):
                folders = []
                for i, name in enumerate(FOLDERS):
                    folder = Folder(
                        account_id=account.id,
                        name=name,
                        uidvalidity=4_294_967_295 - i,
                        uidnext=None if i % 2 else 2**31,
                        highestmodseq=2**63 - 1 if i == 0 else None,
                        last_seen_uid=0,
                        message_count=0,
                        last_sync_at=DATES[i % len(DATES)],
                    )
                    session.add(folder)
                    folders.append(folder)
                session.flush()
                rows: list[dict[str, Any]] = []
                extra = _raws(rng)
                for uid in range(1, count + 1):
                    folder = folders[uid % len(folders)]
                    key = (account.id, folder.id, folder.uidvalidity, uid)
                    raw = extra[uid - 1] if uid <= len(extra) else message(uid + n, 400)
                    rows.append(
                        {
                            "account_id": account.id,
                            "folder_id": folder.id,
                            "uidvalidity": folder.uidvalidity,
                            "uid": uid,
                            "flags": ["", "\\Seen", "\\Seen \\Answered $Label_ü"][uid % 3],
                            "internal_date": DATES[uid % len(DATES)],
                            "size": len(raw),
                            "message_id": [None, f"<{uid}.ü@例>", "<a\"b'c\\d@x>"][uid % 3],
                            "sender_enc": cipher.encrypt(
                                "message.sender", TEXTS[uid % len(TEXTS)].encode(), *key
                            ),
                            "subject_enc": cipher.encrypt(
                                "message.subject", TEXTS[(uid + 3) % len(TEXTS)].encode(), *key
                            ),
                            "raw_enc": cipher.encrypt("message.raw", raw, *key),
                            "fetched_at": dt.datetime(2026, 11, 28, 12, 0, 0, uid, tzinfo=UTC),
                        }
                    )
                session.execute(insert(Message), rows)
        session.commit()


def _job_runs(rt: Runtime, rng: random.Random, count: int) -> None:
    with rt.sessions() as session:
        accounts = session.execute(select(MailAccount.id, MailAccount.user_id)).all()
        base = dt.datetime(2026, 1, 28, tzinfo=UTC)
        for i in range(count):
            account_id, user_id = accounts[i % len(accounts)]
            enqueued = base + dt.timedelta(seconds=i * 37, microseconds=rng.randrange(10**6))
            session.add(
                JobRun(
                    kind=["sync_user_emails", "sync_all_accounts"][i % 2],
                    backend=["legacy", "celery", "fallback", "inline"][i % 4],
                    status=["queued", "running", "success", "failed", "retry"][i % 5],
                    attempts=i % 4,
                    user_id=None if i % 11 == 0 else user_id,
                    account_id=None if i % 13 == 0 else account_id,
                    enqueued_at=enqueued,
                    started_at=None if i % 5 == 0 else enqueued + dt.timedelta(seconds=1),
                    finished_at=None if i % 5 < 2 else enqueued + dt.timedelta(seconds=3),
                    error=None if i % 5 != 3 else TEXTS[i % len(TEXTS)],
                )
            )
        session.commit()


def build_legacy_install(root: Path, dovecot: DovecotServer) -> LegacyInstall:
    env = {
        "HOME": str(root / "home"),
        "MAILHELPER_DATA_DIR": str(root / "data"),
        "MAILHELPER_LOCAL_KEY_FILE": str(root / "data" / "master.key"),
        "MAILHELPER_IMAP_CA_FILE": str(dovecot.ca_file),
        "MAILHELPER_IMAP_TIMEOUT": "10",
    }
    db_file = root / "legacy.db"
    url = f"sqlite:///{db_file}"
    db.upgrade(url)
    install = LegacyInstall(db_file, env)
    rng = random.Random(8)
    rt = install.runtime(url)
    try:
        # the real sync path: Dovecot -> messages and folder state
        box = make_mailbox(rt, dovecot)
        for raw in [message(i, 1500) for i in range(20)]:
            box.append(raw)
        for raw in malformed().values():
            box.append(raw, folder="Unicode Ordner ü")
        rt.sync.sync_account(box.account_id)
        with rt.sessions() as session:
            for email, password, host, username in [
                ("jürgen.müller@bücher.example", "pässwort-lang-genug", "mail.example", "jü"),
                ("用户@例子.测试", "密码密码密码密码密码", "imap.example.cn", "用户"),
                ("o'brien+tag@example.org", "p@ss 'wörd' 🔑 \"x\" \\n", "10.0.0.1", "o'b"),
            ]:
                user = create_user(session, rt.ciphers, email, password)
                for port, tls in ((993, "implicit"), (143, "starttls")):
                    add_account(
                        session,
                        rt.ciphers,
                        user,
                        host=host,
                        port=port,
                        tls_mode=tls,
                        username=username,
                        password=password + "🔐",
                    )
                token = issue_token(session, user, name="Bücher-Token ✓")
                assert user_for_token(session, token) is not None
            for _ in range(6):  # login throttling: failed_logins and locked_until
                assert authenticate(session, "o'brien+tag@example.org", "wrong") is None
            account = session.scalars(select(MailAccount).order_by(MailAccount.id.desc())).first()
            assert account is not None
            account.sync_enabled = False
            account.last_error = "Authentifizierung fehlgeschlagen: „falsch“\n\tZeile 2 \\N"
            account.last_error_kind = "permanent"
            session.commit()
        _messages(rt, rng, 450)
        _job_runs(rt, rng, 1500)
    finally:
        rt.close()
    return install
