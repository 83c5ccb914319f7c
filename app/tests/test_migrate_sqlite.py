"""`mailhelper migrate-sqlite`: a legacy SQLite installation moves to PostgreSQL without
losing a row, verified by checksums and by reading everything back through the app."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from mailhelper import cli, db
from mailhelper.accounts import decrypt_settings
from mailhelper.mailbox import raw_bytes, summary
from mailhelper.models import ApiToken, Base, Folder, JobRun, MailAccount, Message, User
from mailhelper.runtime import Runtime
from mailhelper.sqlite_migration import constraints
from mailhelper.sqlite_migration.constraints import STATE_TABLE
from mailhelper.sqlite_migration.progress import Progress
from mailhelper.sqlite_migration.runner import (
    LOCK_KEY,
    MigrationOptions,
    MigrationReport,
    run_migration,
)
from mailhelper.sqlite_migration.source import expected_revision
from mailhelper.sqlite_migration.target_url import parse_target
from mailhelper.users import create_user, user_cipher
from sqlalchemy import ForeignKeyConstraint, UniqueConstraint, select

from tests.legacy_fixture import LegacyInstall, build_legacy_install
from tests.servers import PG_BIN, DovecotServer, PostgresServer
from tests.sqlitegen import generate

APP = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def legacy(tmp_path_factory: pytest.TempPathFactory, dovecot: DovecotServer) -> LegacyInstall:
    return build_legacy_install(tmp_path_factory.mktemp("legacy"), dovecot)


@pytest.fixture
def source(legacy: LegacyInstall, tmp_path: Path) -> Path:
    """A private copy of the legacy database file for one test."""
    path = tmp_path / "legacy.db"
    shutil.copyfile(legacy.db_file, path)
    return path


@pytest.fixture
def empty_pg(pg: PostgresServer) -> str:
    """An empty database: the migration must make the schema itself (Alembic)."""
    return pg.create_database(f"mig_{secrets.token_hex(5)}")


@pytest.fixture
def no_app_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No settings and no usable key provider: `vault` without VAULT_ADDR would be a
    configuration error for every command that builds a runtime."""
    for key in list(os.environ):
        if key.startswith(("MAILHELPER_", "VAULT_", "PG")) or key == "DATABASE_URL":
            monkeypatch.delenv(key)
    monkeypatch.setenv("MAILHELPER_KEY_PROVIDER", "vault")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


def secondary_objects() -> int:
    """Foreign keys, unique constraints and indexes the models declare (all set aside)."""
    kinds = (UniqueConstraint, ForeignKeyConstraint)
    return sum(
        len(t.indexes) + sum(isinstance(c, kinds) for c in t.constraints)
        for t in Base.metadata.sorted_tables
    )


def migrate(*args: str | Path) -> int:
    return cli.main(["migrate-sqlite", *map(str, args)])


def report_of(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _norm(value: object) -> object:
    if isinstance(value, dt.datetime):  # SQLite hands back naive UTC
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return value


def _columns(obj: object) -> dict[str, object]:
    return {c.key: _norm(getattr(obj, c.key)) for c in obj.__table__.columns}  # type: ignore[attr-defined]


def app_view(rt: Runtime) -> dict[str, list[Any]]:
    """Every row as the app reads it, content decrypted through the app's own functions."""
    view: dict[str, list[Any]] = {}
    with rt.sessions() as session:
        users = {u.id: u for u in session.scalars(select(User).order_by(User.id))}
        view["users"] = [_columns(u) for u in users.values()]
        view["api_tokens"] = [
            _columns(t) for t in session.scalars(select(ApiToken).order_by(ApiToken.id))
        ]
        view["folders"] = [_columns(f) for f in session.scalars(select(Folder).order_by(Folder.id))]
        view["job_runs"] = [
            _columns(j) for j in session.scalars(select(JobRun).order_by(JobRun.id))
        ]
        accounts = {}
        view["mail_accounts"] = []
        for account in session.scalars(select(MailAccount).order_by(MailAccount.id)):
            accounts[account.id] = account
            cipher = user_cipher(rt.ciphers, users[account.user_id])
            view["mail_accounts"].append((_columns(account), decrypt_settings(cipher, account)))
        names = {f["id"]: f["name"] for f in view["folders"]}
        view["messages"] = []
        for msg in session.scalars(select(Message).order_by(Message.id)):
            user = users[accounts[msg.account_id].user_id]
            shown = summary(user_cipher(rt.ciphers, user), msg, names[msg.folder_id])
            shown.pop("internal_date")
            view["messages"].append((_columns(msg), shown, raw_bytes(rt.ciphers, user, msg)))
    return view


def test_migration_keeps_every_row_as_the_app_reads_it(
    legacy: LegacyInstall, source: Path, empty_pg: str, no_app_config: Path, tmp_path: Path
) -> None:
    report = tmp_path / "out" / "report.json"
    assert migrate("--source", source, "--target", empty_pg, "--report", report) == 0
    doc = report_of(report)
    assert doc["status"] == "ok"
    assert doc["exit_code"] == 0
    assert doc["mode"] == "copy"
    assert doc["revision"]["source"] == doc["revision"]["expected"]
    assert doc["schema"] == {"status": "ok", "differences": [], "rebuilt": secondary_objects()}
    tables = {t["table"]: t for t in doc["tables"]}
    assert set(tables) == {
        "users",
        "api_tokens",
        "mail_accounts",
        "folders",
        "messages",
        "job_runs",
        "phase_transitions",
    }
    for t in tables.values():
        assert t["status"] == "ok"
        assert t["checksum_source"] == t["checksum_target"]
        assert t["rows_source"] == t["rows_target"] == doc["copied_rows"][t["table"]]
        assert t["checksum_source_from"] == "copy stream"
    assert tables["messages"]["rows"] > 3000
    assert tables["job_runs"]["rows"] >= 1500
    assert not no_app_config.exists()  # no key file or secret was created: no key provider

    src_rt, dst_rt = legacy.runtime(f"sqlite:///{source}"), legacy.runtime(empty_pg)
    try:
        before, after = app_view(src_rt), app_view(dst_rt)
        for table in before:
            assert len(after[table]) == len(before[table]) == tables[table]["rows"]
            assert after[table] == before[table], table
        # sequences continue after the copied ids
        with dst_rt.sessions() as session:
            user = create_user(session, dst_rt.ciphers, "new@example.org", "a-long-password")
            assert user.id == max(u["id"] for u in before["users"]) + 1
        # the folder state came along: a sync of the synced mailbox finds nothing new
        synced = before["messages"][0][0]["account_id"]
        result = dst_rt.sync.sync_account(synced, force=True)
        assert result.new == 0
        assert {f.name for f in result.folders} >= {"INBOX"}
    finally:
        src_rt.close()
        dst_rt.close()


def test_verify_only_finds_a_corrupted_row(
    source: Path,
    empty_pg: str,
    no_app_config: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = tmp_path / "first.json"
    assert migrate("--source", source, "--target", empty_pg, "--report", first) == 0
    report = tmp_path / "verify.json"
    assert (
        migrate("--source", source, "--target", empty_pg, "--verify-only", "--report", report) == 0
    )
    doc = report_of(report)
    assert doc["copied_rows"] == {}
    assert {t["checksum_source_from"] for t in doc["tables"]} == {"re-read"}
    # the re-read source gives the digests the copy stream gave
    assert [t["checksum_source"] for t in doc["tables"]] == [
        t["checksum_source"] for t in report_of(first)["tables"]
    ]
    with psycopg.connect(empty_pg, autocommit=True) as conn:
        # one bit of one ciphertext, one microsecond of one timestamp
        conn.execute(
            "UPDATE messages SET raw_enc = set_byte(raw_enc, 20, get_byte(raw_enc, 20) # 1) "
            "WHERE id = (SELECT max(id) FROM messages)"
        )
        conn.execute(
            "UPDATE job_runs SET enqueued_at = enqueued_at + interval '1 microsecond' WHERE id = 7"
        )
    capsys.readouterr()
    assert (
        migrate("--source", source, "--target", empty_pg, "--verify-only", "--report", report) == 4
    )
    doc = report_of(report)
    status = {t["table"]: t["status"] for t in doc["tables"]}
    assert status == {
        "users": "ok",
        "api_tokens": "ok",
        "mail_accounts": "ok",
        "folders": "ok",
        "messages": "mismatch",
        "job_runs": "mismatch",
        "phase_transitions": "ok",
    }
    assert doc["status"] == "mismatch"
    assert doc["exit_code"] == 4
    out = capsys.readouterr().out
    assert "messages" in out
    assert "mismatch" in out
    # a missing row shows in the counts too
    with psycopg.connect(empty_pg, autocommit=True) as conn:
        conn.execute("DELETE FROM job_runs WHERE id = 8")
    assert migrate("--source", source, "--target", empty_pg, "--verify-only", "--json") == 4
    doc = json.loads(capsys.readouterr().out)
    runs = next(t for t in doc["tables"] if t["table"] == "job_runs")
    assert runs["rows_target"] == runs["rows_source"] - 1


def test_non_empty_target_is_refused_unless_replace(
    source: Path,
    empty_pg: str,
    no_app_config: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert migrate("--source", source, "--target", empty_pg) == 0
    report = tmp_path / "r.json"
    capsys.readouterr()
    assert migrate("--source", source, "--target", empty_pg, "--report", report) == 5
    doc = report_of(report)
    assert doc["status"] == "refused"
    assert "--resume" in doc["message"]
    assert "--replace" in doc["message"]
    assert "refused" in capsys.readouterr().out
    assert migrate("--source", source, "--target", empty_pg, "--replace", "--report", report) == 0
    doc = report_of(report)
    assert doc["status"] == "ok"
    assert sum(doc["copied_rows"].values()) > 4000
    # a finished copy resumed: nothing left to copy, still verified
    assert migrate("--source", source, "--target", empty_pg, "--resume", "--report", report) == 0
    assert sum(report_of(report)["copied_rows"].values()) == 0


def test_wrong_source_or_busy_target_is_refused(
    source: Path, empty_pg: str, no_app_config: Path, tmp_path: Path
) -> None:
    db.downgrade(f"sqlite:///{source}", "0002")
    report = tmp_path / "r.json"
    assert migrate("--source", source, "--target", empty_pg, "--report", report) == 6
    message = report_of(report)["message"]
    assert "revision 0002" in message
    head = expected_revision()
    assert head != "0002"
    assert f"expects revision {head}" in message
    blank = tmp_path / "blank.db"
    sqlite3.connect(blank).close()
    assert migrate("--source", blank, "--target", empty_pg, "--report", report) == 6
    assert "no Alembic revision" in report_of(report)["message"]
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    assert migrate("--source", junk, "--target", empty_pg, "--report", report) == 1
    assert "not an SQLite database" in report_of(report)["message"]
    assert migrate("--source", tmp_path / "missing.db", "--target", empty_pg) == 1
    with psycopg.connect(empty_pg, autocommit=True) as other:  # a second run at the same time
        other.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        db.upgrade(f"sqlite:///{source}")
        assert migrate("--source", source, "--target", empty_pg, "--report", report) == 1
    assert "another migrate-sqlite run" in report_of(report)["message"]
    assert migrate("--source", source, "--target", "mysql://x@y/z") == 1


@pytest.fixture(scope="module")
def small_legacy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("small") / "small.db", messages=50, job_runs=20)


@pytest.mark.parametrize(
    ("sql", "complaint"),
    [
        (
            "UPDATE users SET email = X'66FF6F' WHERE id = 2",
            "users id=2 column email: text is not valid UTF-8",
        ),
        (
            "UPDATE job_runs SET error = 'a' || char(0) || 'b' WHERE id = 3",
            "job_runs id=3 column error: text contains a NUL",
        ),
        (
            "UPDATE mail_accounts SET sync_enabled = 2 WHERE id = 1",
            "mail_accounts id=1 column sync_enabled: expected a boolean",
        ),
        (
            "UPDATE messages SET fetched_at = 'yesterday' WHERE id = 4",
            "messages id=4 column fetched_at: not a timestamp",
        ),
        (
            "UPDATE messages SET size = 'big' WHERE id = 5",
            "messages id=5 column size: expected an integer",
        ),
        (
            "UPDATE messages SET raw_enc = 42 WHERE id = 6",
            "messages id=6 column raw_enc: expected a BLOB",
        ),
    ],
)
def test_values_that_cannot_be_copied_are_named(
    small_legacy: Path, tmp_path: Path, empty_pg: str, no_app_config: Path, sql: str, complaint: str
) -> None:
    source = tmp_path / "bad.db"
    shutil.copyfile(small_legacy, source)
    with sqlite3.connect(source) as conn:
        conn.execute(sql)
    report = tmp_path / "r.json"
    assert migrate("--source", source, "--target", empty_pg, "--report", report) == 1
    assert complaint in report_of(report)["message"]


def test_timestamps_become_utc_instants(
    small_legacy: Path, tmp_path: Path, empty_pg: str, no_app_config: Path
) -> None:
    source = tmp_path / "ts.db"
    shutil.copyfile(small_legacy, source)
    with sqlite3.connect(source) as conn:
        conn.execute("UPDATE job_runs SET started_at = '2026-03-01T02:30:00+02:00' WHERE id = 1")
        conn.execute("UPDATE job_runs SET started_at = '2026-03-01 00:30:00.000001' WHERE id = 2")
        conn.execute("UPDATE job_runs SET started_at = '2026-03-01' WHERE id = 3")
    assert migrate("--source", source, "--target", empty_pg) == 0
    with psycopg.connect(empty_pg) as conn:
        conn.execute("SET TIME ZONE 'Europe/Berlin'")
        got = dict(conn.execute("SELECT id, started_at FROM job_runs WHERE id <= 3").fetchall())
    utc = dt.UTC
    assert got[1] == dt.datetime(2026, 3, 1, 0, 30, tzinfo=utc)
    assert got[2] == dt.datetime(2026, 3, 1, 0, 30, 0, 1, tzinfo=utc)
    assert got[3] == dt.datetime(2026, 3, 1, tzinfo=utc)


# -- the target password --------------------------------------------------------------


@pytest.fixture
def role(pg: PostgresServer, empty_pg: str) -> Iterator[tuple[str, str, str]]:
    """A login role with a password full of URL specials; (user, password, database)."""
    name = f"mig_{secrets.token_hex(4)}"
    password = f"p@ss:w/rd%?&#ü{secrets.token_hex(4)}"
    database = empty_pg.rsplit("/", 1)[1]
    quoted = password.replace("'", "''")
    pg.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{quoted}'")
    pg.execute(f'ALTER DATABASE "{database}" OWNER TO {name}')
    pg.execute(f"GRANT ALL ON SCHEMA public TO {name}", database)
    return name, password, database


def run_cli(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailhelper.cli", "-v", "migrate-sqlite", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=APP,
        timeout=300,
        check=False,
    )


def test_password_in_the_url_is_never_shown(
    pg: PostgresServer, role: tuple[str, str, str], small_legacy: Path, tmp_path: Path
) -> None:
    from urllib.parse import quote

    user, password, database = role
    url = f"postgresql://{user}:{quote(password, safe='')}@127.0.0.1:{pg.port}/{database}"
    report = tmp_path / "r.json"
    done = run_cli("--source", small_legacy, "--target", url, "--report", report)
    assert done.returncode == 0, done.stderr
    # a failing run (here: the SQLite file is gone) still reports the target masked
    failed = run_cli(
        "--source", tmp_path / "gone.db", "--target", url + "?password=" + quote(password), "--json"
    )
    assert failed.returncode == 1
    masked = f"postgresql://{user}:***@127.0.0.1:{pg.port}/{database}"
    assert report_of(report)["target"] == masked
    for text in (done.stdout, done.stderr, failed.stdout, failed.stderr, report.read_text()):
        for form in (password, quote(password, safe=""), quote(password)):
            assert form not in text
    assert json.loads(failed.stdout)["target"] == masked + "?password=***"


def test_password_from_pgpassword_passfile_and_service(
    pg: PostgresServer, role: tuple[str, str, str], small_legacy: Path, tmp_path: Path
) -> None:
    user, password, database = role
    bare = f"postgresql://{user}@127.0.0.1:{pg.port}/{database}"
    clean = {k: "" for k in os.environ if k.startswith("PG")}
    done = run_cli(
        "--source", small_legacy, "--target", bare, env={**clean, "PGPASSWORD": password}
    )
    assert done.returncode == 0, done.stderr
    assert password not in done.stdout + done.stderr
    passfile = tmp_path / "pgpass"
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    passfile.write_text(f"127.0.0.1:{pg.port}:{database}:{user}:{escaped}\n")
    passfile.chmod(0o600)
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[mh]\nhost=127.0.0.1\nport={pg.port}\ndbname={database}\nuser={user}\n")
    env = {**clean, "PGPASSFILE": str(passfile), "PGSERVICEFILE": str(services)}
    done = run_cli("--source", small_legacy, "--target", bare, "--replace", env=env)
    assert done.returncode == 0, done.stderr
    done = run_cli(
        "--source", small_legacy, "--target", "postgresql:///?service=mh", "--verify-only", env=env
    )
    assert done.returncode == 0, done.stderr
    wrong = run_cli(
        "--source", small_legacy, "--target", bare, env={**clean, "PGPASSWORD": "wrong"}
    )
    assert wrong.returncode == 1
    assert "password authentication failed" in wrong.stderr


# -- interruption ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_legacy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(
        tmp_path_factory.mktemp("big") / "big.db", messages=20_000, blob_bytes=1024, job_runs=100
    )


def _start(source: Path, target: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mailhelper.cli",
            "migrate-sqlite",
            "--source",
            str(source),
            "--target",
            target,
            "--batch-rows",
            "200",
            *extra,
        ],
        cwd=APP,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_messages(target: str, proc: subprocess.Popen[str], at_least: int = 400) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the copy finished before it could be interrupted"
        with psycopg.connect(target, autocommit=True) as conn:
            # copying has begun once the constraints are set aside (after any --replace)
            if conn.execute(f"SELECT to_regclass('{STATE_TABLE}') IS NOT NULL").fetchone()[0]:
                count = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
                if count >= at_least:
                    return count
        time.sleep(0.02)
    raise TimeoutError("the copy did not start")


def test_interrupted_copy_resumes_to_equal_checksums(
    big_legacy: Path, empty_pg: str, tmp_path: Path
) -> None:
    # SIGINT: the process stops cleanly, says so and exits 130
    proc = _start(big_legacy, empty_pg)
    _wait_for_messages(empty_pg, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in out
    assert "--resume" in err
    refused = _start(big_legacy, empty_pg)
    refused.communicate(timeout=120)
    assert refused.returncode == 5  # an interrupted copy is not an empty target
    report = tmp_path / "resumed.json"
    resumed = _start(big_legacy, empty_pg, "--resume", "--report", str(report))
    assert resumed.wait(timeout=300) == 0, resumed.communicate()[1]
    first = report_of(report)
    assert 0 < first["copied_rows"]["messages"] < 20_000
    resumed_table = next(t for t in first["tables"] if t["table"] == "messages")
    # the segment the interrupted run had begun is read again; one it had not reached yet may
    # be hashed while this run copies it whole (which one depends on where SIGINT landed)
    assert resumed_table["checksum_source_from"] in ("re-read", "copy stream + re-read")

    # SIGKILL: nothing runs on the way out; the committed batches and the record of the
    # set-aside constraints stay, and --resume finishes the job
    proc = _start(big_legacy, empty_pg, "--replace")
    committed = _wait_for_messages(empty_pg, proc, at_least=2000)
    proc.kill()
    proc.wait(timeout=60)
    with psycopg.connect(empty_pg, autocommit=True) as conn:
        assert conn.execute(
            "SELECT to_regclass('mailhelper_sqlite_migration_state') IS NOT NULL"
        ).fetchone()[0]
    resumed = _start(big_legacy, empty_pg, "--resume", "--report", str(report))
    assert resumed.wait(timeout=300) == 0, resumed.communicate()[1]
    second = report_of(report)
    assert second["copied_rows"]["messages"] <= 20_000 - committed
    assert second["schema"]["status"] == "ok"
    checksums = [
        {
            t["table"]: (t["rows_source"], t["checksum_source"], t["checksum_target"])
            for t in r["tables"]
        }
        for r in (first, second)
    ]
    assert checksums[0] == checksums[1]
    for _rows, src, dst in checksums[1].values():
        assert src == dst
    assert checksums[1]["messages"][0] == 20_000


class WritesDuringVerify(Progress):
    """The app left running: a job is recorded in the source while the tool verifies."""

    def __init__(self, source: Path) -> None:
        super().__init__(io.StringIO())
        self.source = source

    def note(self, message: str) -> None:
        super().note(message)
        if message.startswith("verifying"):
            with sqlite3.connect(self.source) as conn:
                conn.execute(
                    "INSERT INTO job_runs (kind, backend, status, attempts, enqueued_at) "
                    "VALUES ('sync_user_emails', 'legacy', 'queued', 0, '2026-11-28 20:00:00')"
                )


def test_a_source_written_during_the_run_is_a_mismatch(
    small_legacy: Path, tmp_path: Path, empty_pg: str
) -> None:
    source = tmp_path / "live.db"
    shutil.copyfile(small_legacy, source)
    opts = MigrationOptions(source=source, target=parse_target(empty_pg))
    report = MigrationReport(source=str(source), target="t", mode="copy")
    run_migration(opts, WritesDuringVerify(source), report)
    assert report.status == "mismatch"
    assert report.source_changed
    assert "source changed during the run" in (report.message or "")
    # every table was copied and matched the stream: only the watcher saw the late write
    assert all(t["status"] == "ok" for t in report.tables)


# -- parallel segments ------------------------------------------------------------------


def _schema(pg: PostgresServer, database: str) -> str:
    """The schema as pg_dump writes it (tables, columns with storage, constraints, indexes,
    sequences), the way an operator would compare two databases."""
    env = {**os.environ, "PGPASSWORD": pg.password}
    out = subprocess.run(
        [
            str(PG_BIN / "pg_dump"),
            *("-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres"),
            "--schema-only",
            "--no-owner",
            database,
        ],
        check=True,
        capture_output=True,
        env=env,
        text=True,
    ).stdout
    # comments and pg_dump's per-run \restrict key are not schema
    skip = ("--", "\\restrict", "\\unrestrict")
    return "\n".join(line for line in out.splitlines() if not line.startswith(skip))


def test_segmented_resume_ends_with_exactly_the_alembic_schema(
    big_legacy: Path, pg: PostgresServer, tmp_path: Path
) -> None:
    name = f"seg_{secrets.token_hex(5)}"
    target = pg.create_database(name)
    fresh = f"fresh_{secrets.token_hex(5)}"
    pg.create_database(fresh)
    db.upgrade(pg.url(fresh).replace("postgresql:", "postgresql+psycopg:", 1))  # Alembic only
    report = tmp_path / "r.json"
    proc = _start(big_legacy, target, "--report", str(report))
    assert proc.wait(timeout=300) == 0, proc.communicate()[1]
    whole = {t["table"]: t for t in report_of(report)["tables"]}
    assert whole["messages"]["checksum_source_from"] == "copy stream"
    with sqlite3.connect(big_legacy) as src:
        split_id = src.execute(
            "SELECT id FROM messages ORDER BY id LIMIT 1 OFFSET 10000"
        ).fetchone()[0]
    # the state a kill leaves when the first segment of messages is committed and the
    # second has not begun: constraints recorded and set aside, the second half missing
    with psycopg.connect(target, autocommit=True) as conn:
        assert constraints.relax(conn, [t.name for t in Base.metadata.sorted_tables]) > 0
        conn.execute("DELETE FROM messages WHERE id >= %s", (split_id,))
    resumed = _start(big_legacy, target, "--resume", "--report", str(report))
    assert resumed.wait(timeout=300) == 0, resumed.communicate()[1]
    doc = report_of(report)
    assert doc["copied_rows"]["messages"] == 10_000
    tables = {t["table"]: t for t in doc["tables"]}
    # segment one re-read from the source, segment two hashed while it was copied
    assert tables["messages"]["checksum_source_from"] == "copy stream + re-read"
    for t, before in whole.items():
        assert tables[t]["checksum_source"] == tables[t]["checksum_target"]
        assert tables[t]["checksum_source"] == before["checksum_source"], t
    # dropped and rebuilt around the copy, the schema is the one Alembic makes
    assert _schema(pg, name) == _schema(pg, fresh)
