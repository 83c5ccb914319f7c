"""Session-scoped real servers and per-test databases, runtimes and mail accounts."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from imapclient import IMAPClient
from mailhelper import db
from mailhelper.accounts import add_account
from mailhelper.config import Settings, load_settings
from mailhelper.runtime import Runtime, build_runtime
from mailhelper.users import create_user

from tests.servers import BaoServer, DovecotServer, PostgresServer


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_template(pg: PostgresServer) -> str:
    pg.create_database("mh_template")
    db.upgrade(pg.url("mh_template"))
    return "mh_template"


@pytest.fixture
def pg_url(pg: PostgresServer, pg_template: str) -> str:
    """A fresh, migrated PostgreSQL database for one test."""
    return pg.create_database(f"t_{secrets.token_hex(6)}", template=pg_template)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'mh.db'}"
    db.upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture(scope="session")
def bao() -> Iterator[BaoServer]:
    server = BaoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    server = DovecotServer().start()
    yield server
    server.stop()


@pytest.fixture
def base_env(tmp_path: Path, dovecot: DovecotServer) -> dict[str, str]:
    return {
        "HOME": str(tmp_path / "home"),
        "MAILHELPER_DATA_DIR": str(tmp_path / "data"),
        "MAILHELPER_IMAP_CA_FILE": str(dovecot.ca_file),
        "MAILHELPER_IMAP_TIMEOUT": "10",
    }


@pytest.fixture
def settings(base_env: dict[str, str], pg_url: str) -> Settings:
    return load_settings({**base_env, "DATABASE_URL": pg_url})


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = build_runtime(settings)
    yield rt
    rt.close()


@pytest.fixture
def any_runtime(base_env: dict[str, str], db_url: str) -> Iterator[Runtime]:
    """A runtime on SQLite and on PostgreSQL (parametrized through db_url)."""
    rt = build_runtime(load_settings({**base_env, "DATABASE_URL": db_url}))
    yield rt
    rt.close()


@dataclass
class Mailbox:
    """A Dovecot user and the app user/account that syncs it."""

    dovecot: DovecotServer
    imap_user: str
    imap_password: str
    user_id: int
    email: str
    account_id: int

    def imap(self) -> IMAPClient:
        client = IMAPClient("127.0.0.1", port=self.dovecot.imap_port, ssl=False)
        client.login(self.imap_user, self.imap_password)
        return client

    def append(self, raw: bytes, folder: str = "INBOX", flags: tuple[bytes, ...] = ()) -> int:
        with self.imap() as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            resp = client.append(folder, raw, flags=flags)
        # APPENDUID: b'[APPENDUID <uidvalidity> <uid>] Append completed.'
        return int(resp.split(b"]")[0].split()[-1])


def make_mailbox(rt: Runtime, dovecot: DovecotServer, tls: str = "starttls") -> Mailbox:
    imap_user, imap_password = dovecot.add_user()
    email = f"{secrets.token_hex(4)}@example.org"
    port = dovecot.imaps_port if tls == "implicit" else dovecot.imap_port
    with rt.sessions() as session:
        user = create_user(session, rt.ciphers, email, secrets.token_urlsafe(16))
        account = add_account(
            session,
            rt.ciphers,
            user,
            host="localhost",
            port=port,
            tls_mode=tls,
            username=imap_user,
            password=imap_password,
        )
        return Mailbox(dovecot, imap_user, imap_password, user.id, email, account.id)


@pytest.fixture
def mailbox(runtime: Runtime, dovecot: DovecotServer) -> Mailbox:
    return make_mailbox(runtime, dovecot)
