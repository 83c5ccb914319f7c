"""Across the deployed stack: services up, no unauthenticated access from the app host,
no secret where another user, a unit file, `ps` or the journal could show it."""

from __future__ import annotations

import pytest

from stacklib import Stack

SERVICES = {
    "vault1": ["openbao"],
    "data1": ["postgresql@15-main", "redis-server"],
    "app1": ["mail-helper"],
    "app2": ["mail-helper"],
    "worker1": [
        "mail-helper-celery-worker",
        "mail-helper-celery-beat",
        "mail-helper-celery-flower",
    ],
    "imap1": ["dovecot"],
}
# Python on the app host, the app's own venv (psycopg); no client tools are installed there.
APP_PY = "/opt/mail-helper/current/venv/bin/python"


@pytest.mark.parametrize(("host", "unit"), [(h, u) for h, units in SERVICES.items() for u in units])
def test_service_enabled_and_running(deployed: Stack, host: str, unit: str) -> None:
    service = deployed.host(host).service(unit)
    assert service.is_enabled, f"{host}: {unit} not enabled"
    assert service.is_running, f"{host}: {unit} not running"


def test_beat_runs_nowhere_else(deployed: Stack) -> None:
    for host in ("app1", "app2"):
        assert not deployed.host(host).service("mail-helper-celery-beat").is_running


REDIS_PROBE = """
import socket, sys
sock = socket.create_connection((sys.argv[1], 6379), 5)
sock.sendall(b"KEYS *\\r\\n")
print(sock.recv(200).decode())
"""
PG_PROBE = """
import sys, psycopg
try:
    psycopg.connect(f"host={sys.argv[1]} dbname=mailhelper connect_timeout=5 {sys.argv[2]}")
    print("CONNECTED")
except Exception as exc:
    print("REFUSED", exc)
"""
HTTP_PROBE = """
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=5)
    print(200)
except urllib.error.HTTPError as exc:
    print(exc.code)
"""


def probe(stack: Stack, code: str, *args: str) -> str:
    """Run a probe with the app's Python on app1 (the venv has psycopg; no client tools)."""
    return stack.exec("app1", [APP_PY, "-c", code, *args], check=False).stdout.strip()


def test_redis_refuses_unauthenticated_commands_from_the_app_host(deployed: Stack) -> None:
    assert probe(deployed, REDIS_PROBE, deployed.ip("data1")).startswith("-NOAUTH")


@pytest.mark.parametrize(
    "params",
    [
        "sslmode=require user=mailhelper_app",
        "sslmode=disable user=mailhelper_app password=wrong",
        "sslmode=require user=postgres",
    ],
)
def test_postgresql_refuses_logins_without_password_or_tls(deployed: Stack, params: str) -> None:
    out = probe(deployed, PG_PROBE, deployed.ip("data1"), params)
    assert out.startswith("REFUSED"), out


def test_vault_refuses_reads_without_a_token(deployed: Stack) -> None:
    url = f"https://{deployed.ip('vault1')}:8200/v1/kv/data/mailhelper/redis"
    assert probe(deployed, HTTP_PROBE, url) in ("401", "403")


def test_flower_refuses_requests_without_credentials_from_the_app_host(deployed: Stack) -> None:
    assert probe(deployed, HTTP_PROBE, f"http://{deployed.ip('worker1')}:5555/api/workers") == "401"


@pytest.fixture(scope="module")
def secrets(deployed: Stack) -> dict[str, str]:
    found = deployed.stack_secrets()
    assert len(found) == 11, sorted(found)  # 5 KV fields, 6 AppRole secret_ids
    assert all(len(v) >= 16 for v in found.values()), sorted(found)
    return found


def grep_secrets(stack: Stack, host: str, secrets: dict[str, str], script: str) -> list[str]:
    """Run `script` in the host; it greps with the secrets as fixed patterns from stdin."""
    patterns = "\n".join(secrets.values()) + "\n"
    out = stack.exec(host, ["sh", "-c", script], stdin=patterns, check=False).stdout
    return [line for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("host", list(SERVICES))
def test_no_secret_in_files_other_users_can_read(
    deployed: Stack, secrets: dict[str, str], host: str
) -> None:
    script = (
        "p=$(mktemp -p /run) && cat > $p && "
        "find /etc /opt /var /usr/local /srv /home /root /tmp -xdev -type f "
        "\\( -perm -o=r -o \\( -perm -g=r ! -group root \\) \\) "
        "! -path '/var/lib/dpkg/*' ! -path '/var/cache/*' -size -20M -print0 2>/dev/null "
        "| xargs -0 -r grep -lF -f $p 2>/dev/null; rm -f $p"
    )
    leaks = grep_secrets(deployed, host, secrets, script)
    assert leaks == [], f"{host}: secrets in {leaks}"


@pytest.mark.parametrize("host", list(SERVICES))
def test_no_secret_in_units_command_lines_environments_or_journal(
    deployed: Stack, secrets: dict[str, str], host: str
) -> None:
    script = (
        "p=$(mktemp -p /run) && cat > $p && "
        "{ grep -rlF -f $p /etc/systemd /lib/systemd/system 2>/dev/null | sed 's/^/unit: /'; "
        "for d in /proc/[0-9]*; do "
        "tr '\\0' ' ' < $d/cmdline 2>/dev/null | grep -qF -f $p && echo cmdline: $d; "
        "tr '\\0' '\\n' < $d/environ 2>/dev/null | grep -qF -f $p && echo environ: $d; done; "
        "journalctl --no-pager -o cat 2>/dev/null | grep -qF -f $p && echo journal: match; "
        "}; rm -f $p"
    )
    leaks = grep_secrets(deployed, host, secrets, script)
    assert leaks == [], f"{host}: {leaks}"
