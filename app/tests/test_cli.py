"""The CLI in the exact forms scripts and playbooks use."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mailhelper import cli

from tests.conftest import Mailbox
from tests.jobsenv import coverage_env
from tests.mailgen import malformed, message
from tests.servers import DovecotServer


@pytest.fixture
def dev_env(
    base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, db_url: str
) -> dict[str, str]:
    for key in list(os.environ):
        if key.startswith(("MAILHELPER_", "VAULT_")) or key in (
            "DATABASE_URL",
            "SECRET_KEY",
            "CREDENTIALS_DIRECTORY",
        ):
            monkeypatch.delenv(key)
    env = {**base_env, "DATABASE_URL": db_url}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def run(monkeypatch: pytest.MonkeyPatch, args: list[str], stdin: str = "") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return cli.main(args)


def test_cli_full_flow(
    dev_env: dict[str, str],
    dovecot: DovecotServer,
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    assert run(monkeypatch, ["db", "upgrade"]) == 0
    assert run(monkeypatch, ["create-user", "--email", "cli@example.org"], "a-long-password\n") == 0
    assert run(monkeypatch, ["create-user", "--email", "cli@example.org"], "a-long-password\n") == 1
    assert b"exists" in capsysbinary.readouterr().err
    imap_user, imap_pw = dovecot.add_user()
    args = [
        "add-account",
        "--user",
        "cli@example.org",
        "--host",
        "localhost",
        "--port",
        str(dovecot.imaps_port),
        "--tls",
        "implicit",
        "--username",
        imap_user,
    ]
    assert run(monkeypatch, args, imap_pw + "\n") == 0
    account_id = int(capsysbinary.readouterr().out.strip())
    assert run(monkeypatch, [*args[:2], "nobody@example.org", *args[3:]], "pw\n") == 1
    assert run(monkeypatch, args, "") == 1  # no password on stdin
    capsysbinary.readouterr()

    box = Mailbox(dovecot, imap_user, imap_pw, 0, "", account_id)
    raws = [message(1, 2000), *malformed().values()]
    for raw in raws:
        box.append(raw)
    box.append(message(2), folder="Archive")
    assert run(monkeypatch, ["sync", "--account", str(account_id), "--json"]) == 0
    result = json.loads(capsysbinary.readouterr().out)
    assert result["new"] == len(raws) + 1
    assert {f["name"]: f["new"] for f in result["folders"]} == {"INBOX": len(raws), "Archive": 1}
    assert run(monkeypatch, ["sync", "--account", str(account_id)]) == 0
    text = capsysbinary.readouterr().out.decode()
    assert "INBOX: 0 new" in text
    assert "total: 0 new" in text

    assert run(monkeypatch, ["list-messages", "--account", str(account_id), "--json"]) == 0
    rows = json.loads(capsysbinary.readouterr().out)
    assert len(rows) == len(raws) + 1
    assert set(rows[0]) == {"id", "folder", "uid", "size", "message_id"}
    assert run(monkeypatch, ["list-messages", "--account", str(account_id)]) == 0
    assert len(capsysbinary.readouterr().out.splitlines()) == len(rows)

    # compare with what the server serves (Dovecot rewrites a NUL byte on APPEND)
    with box.imap() as client:
        client.select_folder("INBOX", readonly=True)
        fetched = client.fetch(client.search("ALL"), [b"BODY.PEEK[]"])
    served = {hashlib.sha256(d[b"BODY[]"]).hexdigest() for d in fetched.values()}
    for row in rows:
        if row["folder"] != "INBOX":
            continue
        assert run(monkeypatch, ["show-message", "--id", str(row["id"]), "--raw"]) == 0
        out = capsysbinary.readouterr().out
        assert hashlib.sha256(out).hexdigest() in served
        assert len(out) == row["size"]
    assert run(monkeypatch, ["show-message", "--id", str(rows[0]["id"])]) == 0
    assert b"Subject: Test " in capsysbinary.readouterr().out
    assert run(monkeypatch, ["show-message", "--id", "999999", "--raw"]) == 1

    assert run(monkeypatch, ["rotate-keys"]) == 0
    assert b"rewrapped 1 of 1" in capsysbinary.readouterr().out
    inbox_id = next(r["id"] for r in rows if r["folder"] == "INBOX")
    assert run(monkeypatch, ["show-message", "--id", str(inbox_id), "--raw"]) == 0
    assert hashlib.sha256(capsysbinary.readouterr().out).hexdigest() in served


def test_cli_sync_exit_codes(
    dev_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    assert run(monkeypatch, ["create-user", "--email", "x@example.org"], "a-long-password\n") == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = ["add-account", "--user", "x@example.org", "--tls", "none", "--username", "u"]
    assert run(monkeypatch, [*base, "--host", "127.0.0.1", "--port", str(port)], "pw\n") == 0
    assert run(monkeypatch, [*base, "--host", "nowhere.invalid", "--port", "143"], "pw\n") == 0
    capsys.readouterr()
    assert run(monkeypatch, ["sync", "--account", "1"]) == cli.EXIT_TRANSIENT
    assert "retry later" in capsys.readouterr().err
    assert run(monkeypatch, ["sync", "--account", "2"]) == cli.EXIT_PERMANENT
    assert "does not resolve" in capsys.readouterr().err
    assert run(monkeypatch, ["sync", "--account", "99"]) == 1


def test_config_error_is_reported_with_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MAILHELPER_ENV", "production")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert cli.main(["list-messages", "--account", "1"]) == 1
    assert "configuration error: DATABASE_URL" in capsys.readouterr().err
    assert cli.main(["db", "upgrade"]) == 1


def test_console_script_serves_with_no_configuration(tmp_path: Path) -> None:
    """`mailhelper serve` with an empty environment: SQLite + key file in the XDG dir."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("mailhelper")
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"], **coverage_env()}
    proc = subprocess.Popen(
        [str(exe), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        body = first_health(proc, port)
        assert body["status"] == "ok"
        assert body["key_provider"] == "local"
        data = tmp_path / ".local/share/mailhelper"
        assert (data / "mailhelper.db").exists()
        assert (data / "master.key").stat().st_mode & 0o777 == 0o600
    finally:
        proc.terminate()
        proc.wait(10)
    version = subprocess.run(
        [str(exe), "--version"], capture_output=True, text=True, env=env, check=True
    )
    assert version.stdout.startswith("mailhelper ")


def first_health(proc: subprocess.Popen, port: int, timeout: float = 90) -> dict:
    """The first /health answer of a server starting on `port` (fails when it exits)."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                return json.loads(resp.read())
        except OSError:
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, f"no answer on port {port} after {timeout} s"
            time.sleep(0.2)


def test_gunicorn_serves_the_wsgi_app(tmp_path: Path, sqlite_url: str) -> None:
    """The production entry point under the real gunicorn (two workers, shared metrics)."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "prom").mkdir()
    env = {
        "HOME": str(tmp_path),
        "PATH": os.environ["PATH"],
        "DATABASE_URL": sqlite_url,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
        **coverage_env(),
    }
    exe = Path(sys.executable).with_name("gunicorn")
    proc = subprocess.Popen(
        [str(exe), "--workers", "2", "--bind", f"127.0.0.1:{port}", "mailhelper.wsgi:app"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert first_health(proc, port)["status"] == "ok"
        for _ in range(4):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        line = 'mailhelper_http_requests_total{endpoint="health.health",method="GET",status="200"}'
        counts = [float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(line)]
        # summed over both workers (a first poll that timed out under load may add one)
        assert len(counts) == 1, text
        assert counts[0] >= 5, text
    finally:
        proc.terminate()
        proc.wait(15)


def test_process_entry_points_start_without_alembic_or_a_password_hash() -> None:
    # Every CLI call, web, worker and Flower start imports these; Alembic (about 0.4 s) and the
    # unknown-address scrypt hash (about 0.15 s) belong to the migration and to login checks.
    code = (
        "import sys\n"
        "import mailhelper.cli, mailhelper.processes, mailhelper.tasks, mailhelper.web\n"
        "from mailhelper import users\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'),"
        " users._dummy_hash.cache_info().currsize)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == ["[]", "0"]
