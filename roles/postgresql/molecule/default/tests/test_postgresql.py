"""Verify the postgresql role: scram-only TLS logins, least-privilege roles, tested backups."""

import json
import os
import re
import shlex
from pathlib import Path

import pytest

EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
PORT = 5432
UNIT = "postgresql@15-main"
BACKUP_DIR = "/var/backups/postgresql"
CONF_DIR = "/etc/postgresql/15/main"
DB = "mailhelper"
OWNER, MIGRATOR, APP = "mailhelper_owner", "mailhelper_migrator", "mailhelper_app"
LOGIN_ROLES = [MIGRATOR, APP, "reports_app"]


@pytest.fixture(scope="module")
def passwords() -> dict[str, str]:
    return {r: (EPHEMERAL / f"pg_{r}").read_text().split()[0] for r in LOGIN_ROLES}


def su(host, sql: str, db: str = "postgres"):
    """Run SQL as the postgres superuser over the local socket (peer authentication)."""
    return host.run(
        f"runuser -u postgres -- psql -X -At -v ON_ERROR_STOP=1 -p {PORT} -d {db} "
        f"-c {shlex.quote(sql)}"
    )


def su_value(host, sql: str, db: str = "postgres") -> str:
    result = su(host, sql, db)
    assert result.rc == 0, result.stderr
    return result.stdout.strip()


def login(host, user: str, password: str | None, sql: str, *, db: str = DB, **conn):
    """Connect as a login role; TCP over TLS unless `host` is overridden in conn."""
    params = {"host": "127.0.0.1", "port": PORT, "dbname": db, "user": user}
    conn = {("host" if k == "pghost" else k): v for k, v in conn.items()}
    params.setdefault("sslmode", "require")
    params.update(conn)
    dsn = " ".join(f"{k}={v}" for k, v in params.items())
    env = f"PGPASSWORD={shlex.quote(password)} " if password is not None else ""
    return host.run(
        f"{env}psql -X -At -w -v ON_ERROR_STOP=1 {shlex.quote(dsn)} -c {shlex.quote(sql)}"
    )


def ok(result) -> str:
    assert result.rc == 0, result.stderr
    return result.stdout.strip()


# --- service and configuration ---------------------------------------------------------------


def test_service_enabled_and_running(host):
    assert host.service("postgresql").is_enabled
    assert host.service(UNIT).is_running


def test_listens_only_on_loopback(host):
    listening = {
        line.split()[3] for line in host.run("ss -Htln").stdout.splitlines() if f":{PORT}" in line
    }
    # localhost: 127.0.0.1, and ::1 where the host has IPv6 (containers may not)
    assert f"127.0.0.1:{PORT}" in listening
    assert listening <= {f"127.0.0.1:{PORT}", f"[::1]:{PORT}"}


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("password_encryption", "scram-sha-256"),
        ("ssl", "on"),
        ("ssl_min_protocol_version", "TLSv1.2"),
        ("max_connections", "120"),  # side_effect.yml changed it (restart)
        ("shared_buffers", "128MB"),
        ("work_mem", "16MB"),  # side_effect.yml changed it (reload)
        ("log_connections", "on"),
        ("log_min_duration_statement", "500ms"),
    ],
)
def test_settings_applied(host, setting, expected):
    assert su_value(host, f"SHOW {setting}") == expected


def test_no_setting_waits_for_a_restart(host):
    assert su_value(host, "SELECT count(*) FROM pg_settings WHERE pending_restart") == "0"


# --- client authentication -------------------------------------------------------------------


def test_hba_has_only_peer_scram_and_reject(host):
    rules = su_value(host, "SELECT DISTINCT auth_method FROM pg_hba_file_rules ORDER BY 1")
    assert set(rules.splitlines()) == {"peer", "reject", "scram-sha-256"}
    assert su_value(host, "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL") == "0"
    peer = su_value(
        host, "SELECT user_name FROM pg_hba_file_rules WHERE auth_method = 'peer' ORDER BY 1"
    )
    assert peer == "{postgres}"
    content = host.file(f"{CONF_DIR}/pg_hba.conf").content_string
    lines = [ln for ln in content.splitlines() if ln.strip() and not ln.startswith("#")]
    for line in lines:
        assert not re.search(r"\b(trust|md5|password|ident)\b", line), line
    for line in lines:
        if line.split()[0] == "host":
            pytest.fail(f"plain host entry (TLS not required): {line}")


@pytest.mark.parametrize("via", ["tcp", "socket"])
def test_login_without_password_fails(host, via):
    conn = {"pghost": "/var/run/postgresql", "sslmode": "disable"} if via == "socket" else {}
    result = login(host, APP, None, "SELECT 1", **conn)
    assert result.rc != 0
    assert "no password supplied" in result.stderr


def test_wrong_password_fails(host):
    result = login(host, APP, "not-the-password", "SELECT 1")
    assert result.rc != 0
    assert "password authentication failed" in result.stderr


def test_tcp_without_tls_is_rejected(host, passwords):
    result = login(host, APP, passwords[APP], "SELECT 1", sslmode="disable")
    assert result.rc != 0
    assert "no encryption" in result.stderr


def test_superuser_has_no_network_login(host):
    result = login(host, "postgres", "", "SELECT 1", db="postgres")
    assert result.rc != 0


MD5_CLIENT = r"""
import hashlib, os, socket, ssl, struct, sys
user, pw, db = os.environ["PGU"], os.environ["PGP"], os.environ["PGD"]
sock = socket.create_connection(("127.0.0.1", int(os.environ["PGPORT_"])), timeout=10)
sock.sendall(struct.pack("!ii", 8, 80877103))  # SSLRequest
assert sock.recv(1) == b"S", "server refused TLS"
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
sock = ctx.wrap_socket(sock)
def recvall(n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data
def message():
    head = recvall(5)
    return head[:1], recvall(struct.unpack("!i", head[1:])[0] - 4)
params = b"user\0" + user.encode() + b"\0database\0" + db.encode() + b"\0\0"
sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
kind, body = message()
print("REQUEST", kind.decode(), struct.unpack("!i", body[:4])[0], body[4:].decode(errors="replace"))
# Answer with an MD5 response regardless of what the server asked for.
inner = hashlib.md5((pw + user).encode()).hexdigest()
salt = body[4:8] if len(body) >= 8 else b"\0\0\0\0"
answer = ("md5" + hashlib.md5(inner.encode() + salt).hexdigest()).encode() + b"\0"
sock.sendall(b"p" + struct.pack("!i", 4 + len(answer)) + answer)
try:
    kind, body = message()
    print("REPLY", kind.decode(), body[:4].hex(), body.decode(errors="replace"))
except EOFError:
    print("REPLY closed")
"""


def test_client_forcing_md5_cannot_log_in(host, passwords):
    # libpq 15 cannot be told to insist on MD5, so speak the protocol directly: the server must
    # ask for SCRAM, and an MD5 answer (with the right password) must not authenticate.
    env = f"PGU={APP} PGP={shlex.quote(passwords[APP])} PGD={DB} PGPORT_={PORT}"
    result = host.run(f"{env} python3 -c {shlex.quote(MD5_CLIENT)}")
    assert result.rc == 0, result.stderr
    request, reply = result.stdout.strip().splitlines()
    assert request.startswith("REQUEST R 10 SCRAM-SHA-256"), request  # 10 = SASL, 5 would be MD5
    assert not reply.startswith("REPLY R 00000000"), reply  # AuthenticationOk
    assert reply.startswith(("REPLY E", "REPLY closed")), reply


def test_tls_in_use_and_certificate_matches_host(host, passwords):
    ssl_row = ok(
        login(
            host,
            APP,
            passwords[APP],
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            pghost="localhost",
            sslmode="verify-full",
            sslrootcert=f"{CONF_DIR}/ssl/server.crt",
        )
    )
    assert ssl_row.startswith("t|TLSv1.")


def test_passwords_stored_as_scram_verifiers(host):
    rows = su_value(
        host,
        "SELECT rolname || ':' || coalesce(left(rolpassword, 14), '-') || ':' || rolcanlogin "
        "FROM pg_authid WHERE rolname ~ '^(mailhelper|reports)_' ORDER BY 1",
    ).splitlines()
    assert rows == [
        f"{APP}:SCRAM-SHA-256$:true",
        f"{MIGRATOR}:SCRAM-SHA-256$:true",
        f"{OWNER}:-:false",
        "reports_app:SCRAM-SHA-256$:true",
        "reports_owner:-:false",
    ]


# --- least privilege -------------------------------------------------------------------------


def test_public_gets_nothing(host):
    grantees = su_value(
        host,
        "SELECT count(*) FROM pg_database, aclexplode(datacl) a "
        "WHERE datname IN ('mailhelper', 'reports') AND a.grantee = 0",
    )
    assert grantees == "0"
    assert su_value(host, f"SELECT has_database_privilege('reports_app', '{DB}', 'CONNECT')") == "f"
    assert su_value(host, f"SELECT has_database_privilege('{APP}', 'reports', 'CONNECT')") == "f"
    assert su_value(host, f"SELECT has_database_privilege('{APP}', '{DB}', 'TEMP')") == "f"
    public_schema = su_value(
        host,
        "SELECT count(*) FROM pg_namespace, aclexplode(nspacl) a "
        "WHERE nspname = 'public' AND a.grantee = 0",
        DB,
    )
    assert public_schema == "0"
    owners = su_value(
        host,
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'mailhelper' "
        "UNION ALL SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'",
        DB,
    )
    assert owners.splitlines() == [OWNER, OWNER]


@pytest.fixture(scope="module")
def migrated_table(host, passwords) -> None:
    """A table the migrator creates, as an Alembic migration would."""
    ok(
        login(
            host,
            MIGRATOR,
            passwords[MIGRATOR],
            "CREATE TABLE IF NOT EXISTS molecule_items (id bigserial PRIMARY KEY, note text)",
        )
    )


def test_migrator_session_runs_as_owner(host, passwords, migrated_table):
    who = ok(login(host, MIGRATOR, passwords[MIGRATOR], "SELECT session_user, current_user"))
    assert who == f"{MIGRATOR}|{OWNER}"
    owner = su_value(
        host, "SELECT tableowner FROM pg_tables WHERE tablename = 'molecule_items'", DB
    )
    assert owner == OWNER


def test_app_reads_and_writes_migrated_tables(host, passwords, migrated_table):
    pw = passwords[APP]
    ok(login(host, APP, pw, "INSERT INTO molecule_items (note) VALUES ('rw-a')"))
    ok(login(host, APP, pw, "UPDATE molecule_items SET note = 'rw-b' WHERE note = 'rw-a'"))
    assert (
        ok(login(host, APP, pw, "SELECT note FROM molecule_items WHERE note LIKE 'rw-%'")) == "rw-b"
    )
    ok(login(host, APP, pw, "DELETE FROM molecule_items WHERE note = 'rw-b'"))
    assert (
        ok(login(host, APP, pw, "SELECT count(*) FROM molecule_items WHERE note LIKE 'rw-%'"))
        == "0"
    )


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE app_made (id int)",
        "CREATE TEMP TABLE app_tmp (id int)",
        "CREATE SCHEMA app_schema",
        "CREATE ROLE app_role",
        "CREATE DATABASE app_db",
        "DROP TABLE molecule_items",
        "ALTER TABLE molecule_items ADD COLUMN extra int",
        "TRUNCATE molecule_items",
    ],
)
def test_app_cannot_change_the_schema_or_roles(host, passwords, migrated_table, sql):
    result = login(host, APP, passwords[APP], sql)
    assert result.rc != 0
    assert re.search(r"permission denied|must be owner", result.stderr), result.stderr


def test_second_database_app_confined_to_its_schema(host, passwords):
    pw = passwords["reports_app"]
    assert (
        ok(login(host, "reports_app", pw, "SELECT current_database()", db="reports")) == "reports"
    )
    result = login(host, "reports_app", pw, "CREATE TABLE reporting.x (id int)", db="reports")
    assert "permission denied" in result.stderr


# --- backups and restore ---------------------------------------------------------------------


def dumps(host, pattern: str = "*.dump") -> set[str]:
    out = host.run(f"find {BACKUP_DIR} -maxdepth 1 -type f -name {shlex.quote(pattern)}").stdout
    return set(out.split())


def test_backup_timer_enabled(host):
    timer = host.service("postgresql-backup.timer")
    assert timer.is_enabled
    assert timer.is_running


def test_backup_service_writes_private_custom_format_dumps(host):
    before = dumps(host)
    host.run_expect([0], "systemctl start postgresql-backup.service")
    new = dumps(host) - before
    assert {re.sub(r"_\d{8}T\d{6}Z\.dump$", "", Path(p).name) for p in new} == {DB, "reports"}
    for path in new:
        f = host.file(path)
        assert (f.user, f.group, f.mode) == ("postgres", "postgres", 0o600)
        listing = host.run(f"pg_restore --list {path}")
        assert listing.rc == 0
        assert "Format: CUSTOM" in listing.stdout
    directory = host.file(BACKUP_DIR)
    assert (directory.user, directory.mode) == ("postgres", 0o700)


def test_backup_retention_deletes_only_old_dumps(host):
    old, recent = f"{BACKUP_DIR}/{DB}_old.dump", f"{BACKUP_DIR}/{DB}_recent.dump"
    host.run_expect([0], f"runuser -u postgres -- touch -d '15 days ago' {old}")
    host.run_expect([0], f"runuser -u postgres -- touch -d '13 days ago' {recent}")
    host.run_expect([0], "systemctl start postgresql-backup.service")
    assert not host.file(old).exists
    assert host.file(recent).exists
    host.run(f"rm -f {recent}")


def test_on_demand_backup_returned_its_path(host):
    # converge.yml ran tasks_from=backup_now and saved postgresql_backup_files here
    paths = json.loads((EPHEMERAL / "backup_now.json").read_text())
    assert len(paths) == 2
    for path in paths:
        assert re.fullmatch(
            rf"{BACKUP_DIR}/(mailhelper|reports)_\d{{8}}T\d{{6}}Z_pre-migration\.dump", path
        )
        assert host.file(path).exists


def test_dump_drop_restore_keeps_rows_and_privileges(host, passwords, migrated_table):
    app_pw = passwords[APP]
    ok(
        login(
            host,
            APP,
            app_pw,
            "INSERT INTO molecule_items (note) SELECT 'r' FROM generate_series(1, 25)",
        )
    )
    count = ok(login(host, APP, app_pw, "SELECT count(*) FROM molecule_items"))
    path = ok(host.run(f"/usr/local/sbin/postgresql-backup --label molecule {DB}"))
    # The restore script refuses to replace an existing database without --force.
    refused = host.run(f"/usr/local/sbin/postgresql-restore {path}")
    assert refused.rc == 1
    assert "--force" in refused.stderr

    ok(su(host, "DROP DATABASE mailhelper WITH (FORCE)"))
    assert su_value(host, "SELECT count(*) FROM pg_database WHERE datname = 'mailhelper'") == "0"
    ok(host.run(f"/usr/local/sbin/postgresql-restore {path}"))

    assert ok(login(host, APP, app_pw, "SELECT count(*) FROM molecule_items")) == count
    ok(login(host, APP, app_pw, "INSERT INTO molecule_items (note) VALUES ('after restore')"))
    who = ok(login(host, MIGRATOR, passwords[MIGRATOR], "SELECT current_user"))
    assert who == OWNER  # the per-database SET ROLE came back with the database
    assert (
        su_value(
            host,
            "SELECT count(*) FROM pg_database, aclexplode(datacl) a WHERE datname = 'mailhelper' "
            "AND a.grantee = 0",
        )
        == "0"
    )
    # --force replaces the live database
    ok(host.run(f"/usr/local/sbin/postgresql-restore --force {path}"))
    assert ok(login(host, APP, app_pw, "SELECT count(*) FROM molecule_items")) == count


# --- secrets ---------------------------------------------------------------------------------


def test_passwords_not_in_journal_logs_or_world_readable_files(host, passwords):
    journal = host.run("journalctl --no-pager -o cat").stdout
    assert journal, "the journal should not be empty"
    server_log = host.run("cat /var/log/postgresql/*.log").stdout
    assert "connection authorized" in server_log  # log_connections is on: the log is real
    for secret in passwords.values():
        assert secret not in journal
        assert secret not in server_log
        found = host.run(
            "find / -xdev \\( -path /proc -o -path /sys \\) -prune -o -type f -perm -o+r -print0 "
            f"| xargs -0 grep -l -F -- {shlex.quote(secret)} 2>/dev/null"
        )
        assert found.stdout.strip() == "", found.stdout


def test_passwords_not_on_any_command_line(host, passwords):
    args = host.run("ps -eo args").stdout
    for secret in passwords.values():
        assert secret not in args


def test_private_key_is_private(host):
    key = host.file(f"{CONF_DIR}/ssl/server.key")
    assert (key.user, key.mode) == ("postgres", 0o600)
