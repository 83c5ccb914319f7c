"""Session-scoped real servers and per-test databases, runtimes and mail accounts."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from imapclient import IMAPClient
from mailhelper import db
from mailhelper.accounts import add_account
from mailhelper.config import Settings, load_settings
from mailhelper.runtime import Runtime, build_runtime
from mailhelper.users import create_user

from tests.jobsenv import Worker
from tests.servers import BaoServer, DovecotServer, PostgresServer, RedisServer


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


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


# Short limits so retries and redeliveries happen within seconds; the order the config
# enforces still holds: soft < hard < visibility, backoff and jitter < visibility.
FAST_JOBS = {
    "MAILHELPER_JOB_SOFT_TIME_LIMIT": "20",
    "MAILHELPER_JOB_TIME_LIMIT": "25",
    "MAILHELPER_BROKER_VISIBILITY_TIMEOUT": "30",
    "MAILHELPER_JOB_MAX_RETRIES": "2",
    "MAILHELPER_JOB_RETRY_BACKOFF": "0.2",
    "MAILHELPER_JOB_RETRY_BACKOFF_MAX": "1",
    "MAILHELPER_SYNC_JITTER": "0.5",
    "MAILHELPER_SYNC_EXPIRES": "30",
    "MAILHELPER_PENDING_GRACE": "0",
    "MAILHELPER_BROKER_TIMEOUT": "1",
    "MAILHELPER_LEGACY_RETRY_DELAYS": "0.1,0.1",
    "MAILHELPER_IMAP_TIMEOUT": "10",
}


@pytest.fixture(scope="session")
def jobs_env(
    pg: PostgresServer,
    pg_template: str,
    redis_server: RedisServer,
    dovecot: DovecotServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """One database, data dir (local key) and queue shared by the test process and the
    session worker: the worker must read the rows and keys the tests write."""
    root = tmp_path_factory.mktemp("jobs")
    return {
        "HOME": str(root / "home"),
        "MAILHELPER_DATA_DIR": str(root / "data"),
        "MAILHELPER_IMAP_CA_FILE": str(dovecot.ca_file),
        "DATABASE_URL": pg.create_database("jobs_shared", template=pg_template),
        "REDIS_URL": redis_server.url(0),
        "MAILHELPER_CELERY_QUEUE": "mh-session",
        "USE_LEGACY_JOBS": "false",
        "LEGACY_FALLBACK": "false",
        **FAST_JOBS,
    }


@pytest.fixture(scope="session")
def session_worker(
    jobs_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    worker = Worker(
        jobs_env,
        tmp_path_factory.mktemp("worker-logs"),
        name="session",
        concurrency=2,
        extra=("--include=tests.worker_tasks",),
    ).start()
    yield worker
    worker.stop()


@pytest.fixture
def jobs_runtime_factory(jobs_env: dict[str, str]) -> Iterator[Callable[..., Runtime]]:
    """Runtimes on the shared jobs database with flags/overrides of the test's choosing."""
    made: list[Runtime] = []

    def make(**overrides: str) -> Runtime:
        env = {k: v for k, v in {**jobs_env, **overrides}.items() if v is not None}
        rt = build_runtime(load_settings(env))
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


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
