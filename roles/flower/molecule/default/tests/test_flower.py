"""Verify the flower role: unit, basic auth from Vault, the worker listed, bound only to the
configured address, persistent state, credentials only through LoadCredential=."""

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
UNIT = "mail-helper-celery-flower"
USER = "mail-helper"
CREDS = "/etc/mail-helper/flower-credentials"
STATE = "/var/lib/mail-helper-celery-flower"
PORT = 5566
BASE = f"http://127.0.0.1:{PORT}/flower"
CRED_FILE = "/root/.molecule-flower-auth"


@pytest.fixture(scope="module")
def stack() -> dict:
    return json.loads((EPHEMERAL / "stack.json").read_text())


@pytest.fixture(scope="module")
def auth(stack) -> tuple[str, str]:
    return stack["flower"]["username"], stack["flower"]["password"]


def put_credentials(host, auth: tuple[str, str] | None) -> None:
    """The basic-auth pair into a root-only file in the instance, through stdin of
    `docker exec` (never on a command line)."""
    cred = f"{auth[0]}:{auth[1]}" if auth else ""
    subprocess.run(
        ["docker", "exec", "-i", host.backend.host, "sh", "-c", f"umask 077; cat > {CRED_FILE}"],
        input=cred,
        text=True,
        check=True,
        timeout=30,
    )


def http(host, path: str, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    """GET from inside the instance (the base image has no curl)."""
    put_credentials(host, auth)
    script = (
        "import base64, sys, urllib.request, urllib.error\n"
        f"cred = open('{CRED_FILE}').read().strip()\n"
        "headers = {'Authorization': 'Basic ' + base64.b64encode(cred.encode()).decode()}"
        " if cred else {}\n"
        "req = urllib.request.Request(sys.argv[1], headers=headers)\n"
        "try:\n"
        "    r = urllib.request.urlopen(req, timeout=20)\n"
        "    print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code); print(e.read().decode())\n"
    )
    out = host.check_output(f"python3 -c {shlex.quote(script)} {shlex.quote(BASE + path)}")
    status, _, text = out.partition("\n")
    return int(status), text


def show(host, prop: str) -> str:
    return host.check_output(f"systemctl show -p {prop} --value {UNIT}")


def listeners(host, port: int) -> set[str]:
    """Local addresses in LISTEN state on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in host.check_output(f"cat {table}").splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, _, hexport = local.partition(":")
            if state != "0A" or int(hexport, 16) != port:
                continue
            if len(address) == 8:
                found.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
            else:
                found.add(address)
    return found


def test_unit_enabled_and_active(host):
    service = host.service(UNIT)
    assert service.is_enabled
    assert service.is_running
    pid = show(host, "MainPID")
    assert host.check_output(f"ps -o user= -p {pid}") == USER


def test_command_line_from_variables(host):
    text = host.check_output(f"systemctl cat {UNIT}")
    assert "--address 127.0.0.1" in text
    assert f"--port {PORT}" in text
    assert "--url-prefix flower" in text
    assert f"--db {STATE}/flower.db" in text


def test_unauthenticated_request_refused(host):
    status, _ = http(host, "/")
    assert status == 401
    status, _ = http(host, "/api/workers")
    assert status == 401


def test_wrong_password_refused(host, auth):
    status, _ = http(host, "/", (auth[0], "not-the-password"))
    assert status == 401


def test_vault_credentials_accepted_and_worker_listed(host, auth):
    status, body = http(host, "/", auth)
    assert status == 200, body
    workers: dict = {}
    for _ in range(10):
        status, body = http(host, "/api/workers?refresh=1", auth)
        assert status == 200, body
        workers = json.loads(body)
        if workers:
            break
    assert any(name.startswith("celery@") for name in workers), workers


def test_bound_only_to_the_configured_address(host):
    assert listeners(host, PORT) == {"127.0.0.1"}


@pytest.mark.parametrize(
    ("prop", "value"),
    [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("CapabilityBoundingSet", ""),
        ("UMask", "0077"),
        ("User", USER),
    ],
)
def test_hardening(host, prop, value):
    assert show(host, prop) == value


def test_credentials_only_through_load_credential(host, stack):
    text = host.check_output(f"systemctl cat {UNIT}")
    assert f"LoadCredential=vault-role-id:{CREDS}/vault-role-id" in text
    assert f"LoadCredential=vault-secret-id:{CREDS}/vault-secret-id" in text
    d = host.file(CREDS)
    assert (d.user, d.group, d.mode) == ("root", "root", 0o700)
    for name in ("vault-role-id", "vault-secret-id"):
        f = host.file(f"{CREDS}/{name}")
        assert (f.user, f.group, f.mode) == ("root", "root", 0o600)
    flower = stack["approles"]["flower"]
    assert host.file(f"{CREDS}/vault-secret-id").content_string.strip() == flower["secret_id"]
    assert host.run(f"runuser -u {USER} -- cat {CREDS}/vault-secret-id").rc != 0


def test_no_secret_in_unit_command_lines_environment_or_journal(host, stack, auth):
    secrets = [
        auth[1],
        stack["approles"]["flower"]["secret_id"],
        stack["approles"]["worker"]["secret_id"],
        stack["redis"]["app_password"],
        stack["postgresql"]["app_password"],
    ]
    pid = show(host, "MainPID")
    texts = [
        host.check_output(f"systemctl cat {UNIT}"),
        host.check_output(f"systemctl show {UNIT}"),
        host.check_output("ps -eo args"),
        host.check_output(f"runuser -u {USER} -- cat /proc/{pid}/environ | tr '\\0' '\\n'"),
        host.run("journalctl --no-pager -o cat").stdout,
    ]
    for secret in secrets:
        for text in texts:
            assert secret not in text


def test_zz_state_file_persists_over_a_restart(host, auth):
    host.check_output(f"systemctl restart {UNIT}")
    files = host.check_output(f"ls {STATE}").split()
    assert any(name.startswith("flower.db") for name in files), files
    for name in files:
        f = host.file(f"{STATE}/{name}")
        assert f.user == USER
        assert not f.mode & 0o077
    status = 0
    for _ in range(20):
        try:
            status, _ = http(host, "/", auth)
        except AssertionError:
            status = 0
        if status == 200:
            break
        host.run("sleep 2")
    assert status == 200
