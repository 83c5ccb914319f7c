"""Verify the redis role: a password-protected, durable broker that refuses what it must."""

import json
import os
import shlex
from pathlib import Path

import pytest

EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
APP_USER = "mailhelper"
PORT = 6379


@pytest.fixture(scope="module")
def app_password() -> str:
    return (EPHEMERAL / "redis_app_password").read_text().strip()


@pytest.fixture(scope="module")
def admin_password() -> str:
    return (EPHEMERAL / "redis_admin_password").read_text().strip()


def cli(host, *args: str, user: str | None = None, password: str | None = None):
    """Run redis-cli inside the instance; the password travels in REDISCLI_AUTH."""
    env = f"REDISCLI_AUTH={shlex.quote(password)} " if password else ""
    user_args = f"--user {shlex.quote(user)} " if user else ""
    quoted = " ".join(shlex.quote(a) for a in args)
    return host.run(f"{env}redis-cli --no-auth-warning -p {PORT} {user_args}{quoted}")


def as_app(host, password: str, *args: str) -> str:
    return cli(host, *args, user=APP_USER, password=password).stdout.strip()


def as_admin(host, password: str, *args: str) -> str:
    return cli(host, *args, user="default", password=password).stdout.strip()


def test_the_background_install_of_packages_ahead_ran_to_the_end(host):
    """converge.yml calls the packages_ahead entry point before the role: its one background
    job installed the package (the role's own install found it or waited for it), and the
    container drop-in it wrote first is the role's."""
    read = (
        "import glob, json; print(json.dumps([json.load(open(f))"
        " for f in glob.glob('/root/.ansible_async/*')]))"
    )
    jobs = json.loads(host.check_output(f"python3 -c {shlex.quote(read)}"))
    assert len(jobs) == 1, jobs
    assert not jobs[0].get("failed"), jobs[0].get("msg")
    assert jobs[0].get("changed"), jobs[0]
    assert "redis-server" in jobs[0]["invocation"]["module_args"]["name"]
    dropin = host.file("/etc/systemd/system/redis-server.service.d/container.conf")
    assert "PrivateUsers=false" in dropin.content_string


def test_service_enabled_and_running(host):
    service = host.service("redis-server")
    assert service.is_enabled
    assert service.is_running


def test_unauthenticated_ping_is_refused(host):
    out = cli(host, "PING").stdout
    assert "NOAUTH" in out


def test_wrong_password_is_refused(host):
    result = cli(host, "PING", user=APP_USER, password="not-the-password")
    assert "WRONGPASS" in result.stderr + result.stdout
    assert "PONG" not in result.stdout


def test_default_user_without_password_is_refused(host):
    out = cli(host, "PING", user="default", password="").stdout
    assert "PONG" not in out


def test_app_user_can_set_and_get(host, app_password):
    assert (
        cli(
            host, "SET", "molecule:key", "value-1", user=APP_USER, password=app_password
        ).stdout.strip()
        == "OK"
    )
    assert (
        cli(host, "GET", "molecule:key", user=APP_USER, password=app_password).stdout.strip()
        == "value-1"
    )


@pytest.mark.parametrize(
    "command",
    [
        ["FLUSHALL"],
        ["FLUSHDB"],
        ["CONFIG", "GET", "maxmemory"],
        ["KEYS", "*"],
        ["DEBUG", "SLEEP", "0"],
        ["SHUTDOWN"],
        ["ACL", "LIST"],
        ["MONITOR"],
    ],
)
def test_app_user_cannot_run_dangerous_commands(host, app_password, admin_password, command):
    # The ACL itself must forbid it, whatever global switches (enable-debug-command) say.
    dry = as_admin(host, admin_password, "ACL", "DRYRUN", APP_USER, *command)
    assert "no permissions" in dry, dry
    if command[0] != "MONITOR":  # MONITOR would block on success; DRYRUN covers it
        out = as_app(host, app_password, *command)
        assert "NOPERM" in out or "not allowed" in out, out


def test_admin_sees_aof_on_and_noeviction(host, admin_password):
    info = cli(host, "INFO", "persistence", user="default", password=admin_password).stdout
    assert "aof_enabled:1" in info
    fsync = cli(
        host, "CONFIG", "GET", "appendfsync", user="default", password=admin_password
    ).stdout.split()
    assert fsync == ["appendfsync", "everysec"]
    policy = cli(host, "CONFIG", "GET", "maxmemory-policy", user="default", password=admin_password)
    assert policy.stdout.split() == ["maxmemory-policy", "noeviction"]


def test_queued_data_survives_a_restart(host, app_password):
    as_app(host, app_password, "LPUSH", "molecule:queue", "task-1", "task-2")
    host.run_expect([0], "systemctl restart redis-server")
    for _ in range(20):
        out = cli(
            host, "LLEN", "molecule:queue", user=APP_USER, password=app_password
        ).stdout.strip()
        if out.isdigit():
            break
        host.run("sleep 0.5")
    assert out == "2"


def test_listens_only_where_configured(host):
    assert host.socket(f"tcp://127.0.0.1:{PORT}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{PORT}").is_listening
    assert host.run("ss -Htln").stdout.count(f":{PORT} ") >= 1
    for line in host.run("ss -Htln").stdout.splitlines():
        local = line.split()[3]
        if local.endswith(f":{PORT}"):
            assert local in {f"127.0.0.1:{PORT}", f"[::1]:{PORT}"}, line


@pytest.mark.parametrize("path", ["/etc/redis/redis.conf", "/etc/redis/users.acl"])
def test_config_files_are_private_to_redis(host, path):
    f = host.file(path)
    assert f.user == "redis"
    assert f.group == "redis"
    assert f.mode == 0o640


def test_acl_file_holds_hashes_not_passwords(host, app_password, admin_password):
    acl = host.file("/etc/redis/users.acl").content_string
    assert app_password not in acl
    assert admin_password not in acl
    assert f"user {APP_USER} on #" in acl


def test_password_not_in_journal_or_world_readable_files(host, app_password, admin_password):
    journal = host.run("journalctl --no-pager -o cat").stdout
    assert journal, "the journal should not be empty"
    for secret in (app_password, admin_password):
        assert secret not in journal
        found = host.run(
            "find / -xdev \\( -path /proc -o -path /sys \\) -prune -o -type f -perm -o+r -print0 "
            f"| xargs -0 grep -l -F -- {shlex.quote(secret)} 2>/dev/null"
        )
        assert found.stdout.strip() == "", found.stdout


def test_password_not_on_any_command_line(host, app_password):
    assert app_password not in host.run("ps -eo args").stdout
