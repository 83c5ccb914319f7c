"""playbooks/migrate_sqlite.yml against a legacy install deployed by mail_app on SQLite.

The tests run in file order and build on each other: the legacy install as found, the plan
under --check (nothing changes), input refused at the start, a run that fails at the
migration (a source at another schema revision, from a controller path) and must leave the
app on SQLite and healthy, then the real migration and what it must leave behind.
Then the old-host path (migrate_sqlite_source_host, the platform `<app host>-oldbox`: a legacy
file with 60 messages more than the app host's, and a stand-in mail-helper.service): the app
put back on SQLite (converge again), a run that fails after the writers stopped (the target
not empty, no --replace), then the real migration from the old host's file.
"""

import json
import os
import shlex
import sqlite3
import subprocess
from pathlib import Path

import pytest
import testinfra

EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
ROOT = Path(__file__).resolve().parents[5]
PLAYBOOK = ROOT / "playbooks" / "migrate_sqlite.yml"
SERVICE = "mail-helper"
CONFIG = "/etc/mail-helper/mailhelper.conf"
SQLITE_DB = "/var/lib/mail-helper/mailhelper.db"
BACKUPS = "/var/backups/mail-helper"
MESSAGES = 600  # side_effect.yml: 2 users, 300 messages each
OLD_MESSAGES = MESSAGES + 60  # side_effect.yml: the old host's file has 60 more
INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE", str(EPHEMERAL / "inventory"))
TRANSIT = Path.home() / ".cache" / "ki-mail-helper" / "migrate-sqlite"


def playbook(hostname: str, *extra: str, path: Path = PLAYBOOK) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(EPHEMERAL / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_NOCOLOR": "1",
    }
    argv = [
        "ansible-playbook",
        "-i",
        INVENTORY,
        "-i",
        str(EPHEMERAL / "legacy-vars.yml"),
        str(path),
        *extra,
    ]
    if hostname:
        argv += ["-e", f"migrate_sqlite_app_host={hostname}"]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900, check=False)


@pytest.fixture(scope="module")
def name(host) -> str:
    return host.backend.get_hostname()


@pytest.fixture(scope="module")
def old_name(name) -> str:
    return f"{name}-oldbox"


@pytest.fixture(scope="module")
def old(old_name):
    return testinfra.get_host(f"ansible://{old_name}", ansible_inventory=INVENTORY)


@pytest.fixture(scope="module")
def stack() -> dict:
    return json.loads((EPHEMERAL / "stack.json").read_text())


def python(host, script: str, *args: str) -> str:
    return host.check_output("python3 -c " + " ".join(shlex.quote(a) for a in (script, *args)))


def health(host) -> tuple[int, dict]:
    out = python(
        host,
        "import urllib.request, urllib.error\n"
        "try:\n"
        "    r = urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=10)\n"
        "    print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code); print(e.read().decode())\n",
    )
    status, _, body = out.partition("\n")
    return int(status), json.loads(body)


def sqlite_count(host, path: str, table: str) -> int:
    script = "import sqlite3, sys\n" + (  # noqa: S608 - a fixed table name of this test
        "c = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\n"
        "print(c.execute('SELECT count(*) FROM ' + sys.argv[2]).fetchone()[0])"
    )
    return int(python(host, script, path, table))


def sqlite_content(host, path: str) -> str:
    """A digest of the database's SQL dump: what it holds, whatever its WAL did to its bytes."""
    script = (
        "import hashlib, sqlite3, sys\n"
        "c = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\n"
        "h = hashlib.sha256()\n"
        "for line in c.iterdump():\n"
        "    h.update(line.encode() + b'\\n')\n"
        "print(h.hexdigest())"
    )
    return python(host, script, path)


def pg(host, query: str) -> str:
    return host.check_output(
        "runuser -u postgres -- psql -d mailhelper -tAc " + shlex.quote(query)
    ).strip()


def config(host) -> str:
    return host.file(CONFIG).content_string


def main_pid(host) -> str:
    return host.check_output(f"systemctl show -p MainPID --value {SERVICE}")


def backups(host, pattern: str) -> list[str]:
    out = host.run(f"ls -1 {BACKUPS}/{pattern} 2>/dev/null")
    return out.stdout.split()


def test_the_legacy_install_runs_on_sqlite_in_production_mode(host) -> None:
    conf = config(host)
    assert f"DATABASE_URL=sqlite:///{SQLITE_DB}" in conf
    assert "MAILHELPER_LEGACY_SQLITE=true" in conf
    assert "MAILHELPER_ENV=production" in conf
    assert "MAILHELPER_KEY_PROVIDER=vault" in conf
    assert "MAILHELPER_MIGRATOR_DATABASE_URL" not in conf
    status, body = health(host)
    assert status == 200, body
    assert sqlite_count(host, SQLITE_DB, "messages") == MESSAGES
    assert sqlite_count(host, SQLITE_DB, "users") == 2
    # nothing of the app in PostgreSQL yet
    assert pg(host, "SELECT to_regclass('public.messages') IS NULL") == "t"


def test_check_mode_shows_the_plan_and_changes_nothing(host, name) -> None:
    pid, conf = main_pid(host), config(host)
    run = playbook(name, "--check")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    for step in (
        "stop on",
        "SQLite backup",
        "migrate-sqlite (fresh)",
        "on failure: back on SQLite",
    ):
        assert step in out
    assert main_pid(host) == pid
    assert config(host) == conf
    assert backups(host, "mailhelper-*.db") == []


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ((), "migrate_sqlite_app_host is required"),
        (("-e", "migrate_sqlite_source_controller_path=/nonexistent/x.db"), "no such file"),
        (("-e", "migrate_sqlite_source_host=nohost"), "migrate_sqlite_source_host=nohost"),
        (("-e", "migrate_sqlite_mode=sometimes"), "migrate_sqlite_mode"),
        (("-e", "migrate_sqlite_source_path=/var/lib/mail-helper/none.db"), "no such file"),
    ],
)
def test_bad_input_stops_before_anything_changes(host, name, extra, named) -> None:
    pid = main_pid(host)
    run = playbook(name if extra else "", *extra)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert named in out, out[-2000:]
    assert main_pid(host) == pid  # never stopped


def test_a_failed_migration_leaves_the_app_on_sqlite_and_healthy(host, name, stack) -> None:
    # the legacy file copied to the controller, at a schema revision this app does not know
    # (SQLite's backup API on the host: the live file's WAL comes along)
    python(
        host,
        "import sqlite3, sys\n"
        "src = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\n"
        "dst = sqlite3.connect(sys.argv[2]); src.backup(dst)\n"
        "dst.execute('PRAGMA journal_mode=DELETE'); dst.close()",
        SQLITE_DB,
        "/root/legacy-copy.db",
    )
    bad = EPHEMERAL / "bad-revision.db"
    bad.write_bytes(host.file("/root/legacy-copy.db").content)
    with sqlite3.connect(bad) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    conf = config(host)
    run = playbook(name, "-e", f"migrate_sqlite_source_controller_path={bad}")
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert 'migrate_sqlite failed at "Step report' in out, out[-3000:]
    assert "ffffffffffff" in out  # migrate-sqlite's own message, through the report
    assert "The app is on SQLite as before" in out
    assert stack["postgresql-migrator"]["password"] not in out
    assert config(host) == conf
    assert host.service(SERVICE).is_running
    status, body = health(host)
    assert status == 200, body
    assert sqlite_count(host, SQLITE_DB, "messages") == MESSAGES
    # the backup of the input was still taken
    assert len(backups(host, "mailhelper-*.db")) == 1


def test_the_migration_moves_the_app_to_postgresql(host, name, stack) -> None:
    # like a real inventory (app.yml fetches them from Vault), this one has no AppRole
    # credentials: the playbook must take the ones the app host runs with
    assert "vault_role_id" not in (EPHEMERAL / "legacy-vars.yml").read_text()
    run = playbook(name)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    for secret in (stack["postgresql-migrator"]["password"], stack["postgresql"]["app_password"]):
        assert secret not in out
    creds = out.index("TASK [Hand them to the mail_app role (applied again at the switch)]")
    assert f"ok: [{name}]" in out[creds : out.index("TASK [", creds + 1)]
    for secret in (stack["secret_id"], stack["approles"]["migrator"]["secret_id"]):
        assert secret not in out

    conf = config(host)
    assert "DATABASE_URL=postgresql://mailhelper_app@" in conf
    assert "MAILHELPER_MIGRATOR_DATABASE_URL=postgresql://mailhelper_migrator@" in conf
    assert "sqlite" not in conf.lower()
    assert host.service(SERVICE).is_running
    status, body = health(host)
    assert status == 200, body

    # the report the playbook kept: every table ok, checksums equal on both sides
    reports = backups(host, "migrate-sqlite-*.json")
    assert len(reports) == 1
    report = json.loads(host.file(reports[0]).content_string)
    assert report["status"] == "ok"
    assert report["schema"]["status"] == "ok"
    tables = {t["table"]: t for t in report["tables"]}
    assert tables["messages"]["rows"] == MESSAGES
    for t in tables.values():
        assert t["status"] == "ok"
        assert t["checksum_source"] == t["checksum_target"]
        assert t["rows_source"] == t["rows_target"]
    # what PostgreSQL holds now equals the SQLite file, table by table
    for table in ("users", "mail_accounts", "folders", "messages", "job_runs"):
        assert int(pg(host, f"SELECT count(*) FROM {table}")) == sqlite_count(  # noqa: S608
            host, SQLITE_DB, table
        )
    assert pg(
        host, "SELECT count(DISTINCT message_id) FROM messages WHERE message_id LIKE '%😀%'"
    ) == str(MESSAGES)

    # a timestamped copy is kept, and the SQLite file is untouched: it holds what the copy
    # (taken after the writers stopped) holds, and nothing wrote it after that. Its bytes
    # before the run do not compare: the app ran on it in WAL mode until the playbook stopped
    # it, and SQLite folds the WAL into the file when the app closes it.
    copies = backups(host, "mailhelper-*.db")
    assert len(copies) == 2  # the failed run's and this one's
    newest = sorted(copies)[-1]
    assert sqlite_content(host, SQLITE_DB) == sqlite_content(host, newest)
    assert host.file(SQLITE_DB).mtime <= host.file(newest).mtime
    assert host.file(newest).mode == 0o640
    assert sqlite_count(host, newest, "messages") == MESSAGES
    # the PostgreSQL dump before the migration (postgresql role, backup_now)
    assert "before-sqlite-migration" in host.check_output(
        "find /var/backups/postgresql -name '*before-sqlite-migration*'"
    )


def test_a_second_run_refuses_an_app_already_on_postgresql(host, name) -> None:
    pid, conf = main_pid(host), config(host)
    run = playbook(name)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "nothing to migrate" in out, out[-2000:]
    assert main_pid(host) == pid
    assert config(host) == conf


# --- the old host as the source (migrate_sqlite_source_host) ---


def unit_show(host, prop: str) -> str:
    return host.check_output(f"systemctl show --timestamp=unix -p {prop} --value {SERVICE}")


def unix(stamp: str) -> int:
    return int(stamp.lstrip("@"))


def old_backups(old) -> list[str]:
    return old.run(f"ls -1 {SQLITE_DB}.*.bak 2>/dev/null").stdout.split()


def listed(host, account: int) -> list[dict]:
    admin = f"/usr/local/sbin/{SERVICE}-admin"
    return json.loads(host.check_output(f"{admin} list-messages --account {account} --json"))


def test_the_old_host_holds_its_own_legacy_file_and_a_running_writer(old) -> None:
    assert old.service(SERVICE).is_running
    assert sqlite_count(old, SQLITE_DB, "messages") == OLD_MESSAGES
    assert sqlite_count(old, SQLITE_DB, "users") == 2
    assert not old.file(CONFIG).exists  # no app there, only its file
    assert old_backups(old) == []


def test_converge_puts_the_app_back_on_sqlite(host, name) -> None:
    # what the playbook's rollback does: the mail_app role with mail_app_db_engine=sqlite
    run = playbook("", path=Path(__file__).resolve().parents[1] / "converge.yml")
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert f"DATABASE_URL=sqlite:///{SQLITE_DB}" in config(host)
    status, body = health(host)
    assert status == 200, body
    assert sqlite_count(host, SQLITE_DB, "messages") == MESSAGES


def test_a_failed_migration_from_the_old_host_restarts_its_writer(
    host, name, old, old_name, stack
) -> None:
    # PostgreSQL holds the app host's rows since the first migration: without --replace
    # migrate-sqlite refuses, after the writers on both hosts were stopped
    invocation, conf = unit_show(old, "InvocationID"), config(host)
    old_sum = old.file(SQLITE_DB).sha256sum
    transit_before = set(TRANSIT.glob("*.db"))  # an interrupted earlier run may have left one
    pg_messages = pg(host, "SELECT count(*) FROM messages")
    run = playbook(name, "-e", f"migrate_sqlite_source_host={old_name}")
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert 'migrate_sqlite failed at "Step report' in out, out[-3000:]
    assert "use --resume to continue" in " ".join(out.split())  # migrate-sqlite's message
    assert "The app is on SQLite as before" in out
    assert stack["postgresql-migrator"]["password"] not in out
    # the app as it was
    assert config(host) == conf
    assert host.service(SERVICE).is_running
    status, body = health(host)
    assert status == 200, body
    assert pg(host, "SELECT count(*) FROM messages") == pg_messages
    # the old host's writer was stopped while its file was copied, and started again
    assert old.service(SERVICE).is_running
    assert unit_show(old, "InvocationID") != invocation
    copies = old_backups(old)
    assert len(copies) == 1
    copied = int(old.check_output(f"stat -c %Y {copies[0]}"))
    assert unix(unit_show(old, "InactiveEnterTimestamp")) <= copied
    assert copied <= unix(unit_show(old, "ActiveEnterTimestamp"))
    assert old.file(copies[0]).mode == 0o600
    assert old.file(SQLITE_DB).sha256sum == old_sum
    # no copy of the data left on the controller
    assert set(TRANSIT.glob("*.db")) <= transit_before  # this run left no copy


def test_the_migration_from_the_old_host_carries_the_old_hosts_data(
    host, name, old, old_name, stack
) -> None:
    old_sum = old.file(SQLITE_DB).sha256sum
    transit_before = set(TRANSIT.glob("*.db"))  # an interrupted earlier run may have left one
    run = playbook(
        name, "-e", f"migrate_sqlite_source_host={old_name}", "-e", "migrate_sqlite_mode=replace"
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    for secret in (stack["postgresql-migrator"]["password"], stack["postgresql"]["app_password"]):
        assert secret not in out

    conf = config(host)
    assert "DATABASE_URL=postgresql://mailhelper_app@" in conf
    assert "sqlite" not in conf.lower()
    assert host.service(SERVICE).is_running
    status, body = health(host)
    assert status == 200, body

    # the figures are the old host's (60 messages more than the app host's file)
    newest_report = sorted(backups(host, "migrate-sqlite-*.json"))[-1]
    report = json.loads(host.file(newest_report).content_string)
    assert report["status"] == "ok"
    tables = {t["table"]: t for t in report["tables"]}
    assert tables["messages"]["rows"] == OLD_MESSAGES
    for table in ("users", "mail_accounts", "folders", "messages", "job_runs"):
        assert int(pg(host, f"SELECT count(*) FROM {table}")) == sqlite_count(  # noqa: S608
            old, SQLITE_DB, table
        )
    app_host_messages = sqlite_count(host, SQLITE_DB, "messages")
    assert int(pg(host, "SELECT count(*) FROM messages")) != app_host_messages
    # read through the app: every message, and those only the old host had
    accounts = [int(a) for a in pg(host, "SELECT id FROM mail_accounts ORDER BY id").split()]
    seen = [m for account in accounts for m in listed(host, account)]
    assert len(seen) == OLD_MESSAGES
    assert {f"<oldhost-{i}@example.org>" for i in range(1, 61)} <= {m["message_id"] for m in seen}

    # the input: a copy on the old host (this run's and the failed run's) and on the app host
    assert len(old_backups(old)) == 2
    assert old.file(SQLITE_DB).sha256sum == old_sum
    newest = sorted(backups(host, "mailhelper-*.db"))[-1]
    assert host.file(newest).mode == 0o640
    assert sqlite_count(host, newest, "messages") == OLD_MESSAGES
    assert set(TRANSIT.glob("*.db")) <= transit_before  # this run left no copy
    # the old host's writer was stopped for the copy and is left stopped: the app lives on
    # the app host now, and writes on the old host would go to a file nobody reads
    assert not old.service(SERVICE).is_running
    assert f"Units left stopped on {old_name}: {SERVICE}.service" in " ".join(out.split())
