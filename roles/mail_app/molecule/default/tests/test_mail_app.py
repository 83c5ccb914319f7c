"""Verify the mail_app role: gunicorn under systemd, credentials only via LoadCredential=,
Alembic schema, versioned releases with rollback, and no secret where it must not be."""

import json
import os
import shlex
import subprocess
from pathlib import Path

import hvac
import hvac.exceptions
import pytest

EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
SERVICE = "mail-helper"
USER = "mail-helper"
BASE = "/opt/mail-helper"
CONFIG = "/etc/mail-helper/mailhelper.conf"
CREDS = "/etc/mail-helper/credentials"
URL = "http://127.0.0.1:8000"
EMAIL = "molecule@example.org"
PASSWORD = "molecule-user-pw-7Hq2rT9x"


@pytest.fixture(scope="module")
def stack() -> dict:
    return json.loads((EPHEMERAL / "stack.json").read_text())


@pytest.fixture(scope="module")
def secrets(stack) -> list[str]:
    return [
        stack["secret_id"],
        stack["secret_id_2"],
        stack["postgresql"]["app_password"],
        stack["postgresql-migrator"]["password"],
        stack["approles"]["migrator"]["secret_id"],
        stack["redis"]["app_password"],
        stack["flask"]["secret_key"],
        PASSWORD,
    ]


def http(host, method: str, path: str, body: dict | None = None) -> tuple[int, str]:
    """An HTTP request from inside the instance (the base image has no curl)."""
    script = (
        "import json, sys, urllib.request, urllib.error\n"
        "data = sys.argv[3].encode() if sys.argv[3] else None\n"
        "req = urllib.request.Request(sys.argv[2], data=data, method=sys.argv[1],"
        " headers={'Content-Type': 'application/json'})\n"
        "try:\n"
        "    r = urllib.request.urlopen(req, timeout=10)\n"
        "    print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code); print(e.read().decode())\n"
    )
    payload = json.dumps(body) if body is not None else ""
    args = " ".join(shlex.quote(a) for a in (script, method, URL + path, payload))
    out = host.check_output(f"python3 -c {args}")
    status, _, text = out.partition("\n")
    return int(status), text


def psql(host, query: str) -> str:
    return host.check_output("runuser -u postgres -- psql -d mailhelper -Atc " + shlex.quote(query))


def show(host, unit: str, prop: str) -> str:
    return host.check_output(f"systemctl show -p {prop} --value {unit}")


def test_service_enabled_and_running(host):
    service = host.service(SERVICE)
    assert service.is_enabled
    assert service.is_running


def test_runs_as_its_own_user(host):
    pid = show(host, SERVICE, "MainPID")
    assert pid != "0"
    assert host.check_output(f"ps -o user= -p {pid}") == USER
    workers = host.check_output(f"ps -o user= --ppid {pid}").split()
    assert workers
    assert set(workers) == {USER}
    assert host.user(USER).shell == "/usr/sbin/nologin"


@pytest.mark.parametrize(
    ("prop", "value"),
    [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectControlGroups", "yes"),
        ("CapabilityBoundingSet", ""),
        ("UMask", "0077"),
        ("LimitCORE", "0"),
        ("Type", "notify"),
    ],
)
def test_hardening(host, prop, value):
    assert show(host, SERVICE, prop) == value
    if prop != "Type":
        assert show(host, f"{SERVICE}-migrate", prop) == value


APP_CREDS = ("vault-role-id", "vault-secret-id")
MIGRATOR_CREDS = ("vault-migrator-role-id", "vault-migrator-secret-id")


def test_credentials_only_through_load_credential(host):
    """Each unit loads its own AppRole only: the web unit the app's, the migration unit the
    migrator's (the only one that may read the migrator password)."""
    for unit, own, other in (
        (SERVICE, APP_CREDS, MIGRATOR_CREDS),
        (f"{SERVICE}-migrate", MIGRATOR_CREDS, APP_CREDS),
    ):
        text = host.check_output(f"systemctl cat {unit}")
        loaded = sorted(line for line in text.splitlines() if line.startswith("LoadCredential="))
        assert loaded == [f"LoadCredential={name}:{CREDS}/{name}" for name in own], unit
        for name in other:
            assert name not in text, unit
    d = host.file(CREDS)
    assert (d.user, d.group, d.mode) == ("root", "root", 0o700)
    for name in APP_CREDS + MIGRATOR_CREDS:
        f = host.file(f"{CREDS}/{name}")
        assert (f.user, f.group, f.mode) == ("root", "root", 0o600)
    # the service user cannot read them directly
    for name in ("vault-secret-id", "vault-migrator-secret-id"):
        assert host.run(f"runuser -u {USER} -- cat {CREDS}/{name}").rc != 0
    assert show(host, f"{SERVICE}-migrate", "Result") == "success"


def vault_login(host, role_file: str, secret_file: str) -> hvac.Client:
    """Log in from the controller with the credential files a unit loads."""
    ip = host.check_output("hostname -I").split()[0]
    client = hvac.Client(url=f"https://{ip}:8200", verify=str(EPHEMERAL / "vault/tls/ca.crt"))
    client.auth.approle.login(
        role_id=host.file(f"{CREDS}/{role_file}").content_string.strip(),
        secret_id=host.file(f"{CREDS}/{secret_file}").content_string.strip(),
    )
    return client


def read_kv(client: hvac.Client, name: str) -> dict:
    return client.secrets.kv.v2.read_secret_version(
        f"mailhelper/{name}", mount_point="kv", raise_on_deleted_version=True
    )["data"]["data"]


def test_web_unit_credentials_cannot_read_the_migrator_password(host, stack):
    app = vault_login(host, *APP_CREDS)
    assert read_kv(app, "postgresql") == stack["postgresql"]
    assert "migrator_password" not in read_kv(app, "postgresql")
    with pytest.raises(hvac.exceptions.Forbidden):  # 403 permission denied
        read_kv(app, "postgresql-migrator")
    migrator = vault_login(host, *MIGRATOR_CREDS)
    assert read_kv(migrator, "postgresql-migrator") == stack["postgresql-migrator"]
    for name in ("postgresql", "redis", "flask"):
        with pytest.raises(hvac.exceptions.Forbidden):
            read_kv(migrator, name)


def test_admin_wrapper_runs_db_with_the_migrator_credentials(host):
    admin = f"/usr/local/sbin/{SERVICE}-admin"
    result = host.run(f"{admin} db upgrade")
    assert result.rc == 0, result.stderr
    assert "database upgraded to head" in result.stdout


def test_health(host):
    status, body = http(host, "GET", "/health")
    assert status == 200, body
    data = json.loads(body)
    assert data["checks"]["database"]["status"] == "ok"
    assert data["checks"]["key_provider"]["status"] == "ok"
    assert data["key_provider"] == "vault"


def test_config_file(host):
    f = host.file(CONFIG)
    assert (f.user, f.group, f.mode) == ("root", USER, 0o640)
    text = f.content_string
    assert "MAILHELPER_ENV=production" in text
    # side_effect.yml flipped phase 0 -> 1 at the end
    assert "USE_LEGACY_JOBS=false" in text
    assert "LEGACY_FALLBACK=true" in text
    assert "DATABASE_URL=postgresql://mailhelper_app@127.0.0.1:5432/mailhelper" in text
    # a sealed Vault at start-up: wait (retrying) instead of a systemd restart loop
    assert "MAILHELPER_VAULT_STARTUP_WAIT=300\n" in text


def test_schema_from_alembic(host):
    version = psql(host, "SELECT version_num FROM alembic_version")
    heads = host.check_output(
        f"ls {BASE}/current/venv/lib/python3*/site-packages/mailhelper/migrations/versions/"
    )
    assert version
    assert version.split("_")[0] in heads
    owners = psql(host, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname='public'")
    assert owners == "mailhelper_owner"
    tables = psql(host, "SELECT tablename FROM pg_tables WHERE schemaname='public'").split()
    assert {"users", "job_runs", "alembic_version"} <= set(tables)


def test_create_user_and_log_in(host):
    admin = f"/usr/local/sbin/{SERVICE}-admin"
    exists = psql(host, "SELECT count(*) FROM users WHERE email = 'molecule@example.org'")
    if exists == "0":
        feed = f"printf '%s\\n' {shlex.quote(PASSWORD)}"
        result = host.run(f"{feed} | {admin} create-user --email {EMAIL}")
        assert result.rc == 0, result.stderr
    status, body = http(host, "POST", "/api/v1/auth/login", {"email": EMAIL, "password": PASSWORD})
    assert status == 200, body
    assert json.loads(body)["email"] == EMAIL
    status, _ = http(host, "POST", "/api/v1/auth/login", {"email": EMAIL, "password": "wrong"})
    assert status == 401


def test_no_secret_in_units_config_command_lines_or_journal(host, secrets):
    texts = [
        host.check_output(f"systemctl cat {SERVICE} {SERVICE}-migrate"),
        host.file(CONFIG).content_string,
        host.check_output("ps -eo args"),
        host.check_output(f"systemctl show {SERVICE}"),
        # modules log their invocation to the journal: the credential files' writer must not
        host.check_output("journalctl --no-pager -o cat"),
    ]
    for secret in secrets:
        for text in texts:
            assert secret not in text


def test_no_secret_in_journal_or_world_readable_files(host, secrets):
    journal = host.run("journalctl --no-pager -o cat").stdout
    assert "mail-helper" in journal or "gunicorn" in journal.lower()
    for secret in secrets:
        assert secret not in journal
    patterns = "\n".join(secrets)
    found = host.run(
        f"printf '%s\\n' {shlex.quote(patterns)} > /root/.molecule-patterns && "
        "find / -xdev \\( -path /proc -o -path /sys -o -path /root \\) -prune -o "
        "-type f -perm -o+r -print0 | xargs -0 grep -l -F -f /root/.molecule-patterns 2>/dev/null; "
        "rm -f /root/.molecule-patterns"
    )
    assert found.stdout.strip() == "", found.stdout


def test_releases_current_and_previous_kept(host):
    links = json.loads((EPHEMERAL / "after_second_release.json").read_text())
    assert links["current"] != links["previous"]
    for path in links.values():
        assert path.startswith(f"{BASE}/releases/")
        assert host.file(f"{path}/.installed").exists
        assert host.file(f"{path}/.migrated").exists
        assert host.file(f"{path}/venv/bin/gunicorn").exists


def test_rollback_switched_back_and_is_healthy(host):
    links = json.loads((EPHEMERAL / "after_second_release.json").read_text())
    # side_effect rolled back with playbooks/app_rollback.yml
    assert host.file(f"{BASE}/current").linked_to == links["previous"]
    assert host.file(f"{BASE}/previous").linked_to == links["current"]
    pid = show(host, SERVICE, "MainPID")
    exe = host.check_output(f"cat /proc/{pid}/cmdline | tr '\\0' ' '")
    assert f"{BASE}/current/venv/bin/gunicorn" in exe
    status, body = http(host, "GET", "/health")
    assert status == 200, body


def test_wheelhouse_installed_offline(host):
    current = host.file(f"{BASE}/current").linked_to
    assert host.file(f"{current}/wheels/SHA256SUMS").exists
    assert host.run(f"cd {current}/wheels && sha256sum --quiet -c SHA256SUMS").rc == 0
    freeze = host.check_output(f"{current}/venv/bin/pip freeze")
    assert "mailhelper==" in freeze
    assert "async-timeout==" in freeze  # the target's marker (Python 3.11.2 < 3.11.3)


def test_release_built_in_the_background(host):
    """converge.yml ran the release_ahead entry point first: its background job built the
    release (rc 0, .installed written) and the main entry point kept that build instead of
    installing the release again (the virtualenv is not newer than the job's result)."""
    jobs = {}
    for path in host.check_output("ls /root/.ansible_async").split():
        result = json.loads(host.file(f"/root/.ansible_async/{path}").content_string)
        if " -m venv " in result.get("cmd", ""):
            jobs[path] = result
    assert len(jobs) == 1, jobs
    path, job = jobs.popitem()
    assert job.get("rc") == 0, job.get("stderr")
    release_dir = job["cmd"].split("dir=", 1)[1].split()[0]
    assert host.file(f"{release_dir}/.installed").exists
    job_ended = host.file(f"/root/.ansible_async/{path}").mtime
    assert host.file(f"{release_dir}/venv/pyvenv.cfg").mtime <= job_ended


def test_phase_flip_restarted_and_stays_healthy(host):
    flip = json.loads((EPHEMERAL / "flip.json").read_text())
    before = flip["health_before"]["jobs"]
    assert (before["phase"], before["backend"], before["USE_LEGACY_JOBS"]) == (0, "legacy", True)
    assert flip["pid_after"] != flip["pid_before"]
    status, body = http(host, "GET", "/health")
    assert status == 200, body
    data = json.loads(body)
    assert data["jobs"]["phase"] == 1
    assert data["jobs"]["backend"] == "celery"
    # the app read the Redis password from Vault and logged in as its ACL user
    assert data["checks"]["redis"]["status"] == "ok", data
    # no worker in this scenario: degraded, still 200 (requests fall back to legacy)
    assert data["status"] == "degraded"


def test_zz_secret_id_rotation_with_diff_shows_no_secret(host, stack, tmp_path):
    """Last test: a deployment with a new secret_id under --diff rewrites the credential,
    restarts the unit (healthy again with the new secret_id), and prints neither value."""
    play = tmp_path / "rotate.yml"
    play.write_text(
        "- hosts: all\n"
        "  vars:\n"
        "    mail_app_vault_addr: https://127.0.0.1:8200\n"
        f"    mail_app_vault_ca_file: {EPHEMERAL}/vault/tls/ca.crt\n"
        f"    mail_app_vault_role_id: {stack['role_id']}\n"
        f"    mail_app_vault_secret_id: {stack['secret_id_2']}\n"
        f"    mail_app_vault_migrator_role_id: {stack['approles']['migrator']['role_id']}\n"
        f"    mail_app_vault_migrator_secret_id: {stack['approles']['migrator']['secret_id']}\n"
        "    mail_app_use_legacy_jobs: false\n"
        "    mail_app_legacy_fallback: true\n"
        "  roles:\n"
        "    - role: mail_app\n"
    )
    pid_before = show(host, SERVICE, "MainPID")
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(EPHEMERAL / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(Path(__file__).resolve().parents[4]),
        "ANSIBLE_NOCOLOR": "1",
    }
    run = subprocess.run(
        [
            "ansible-playbook",
            "--diff",
            "-i",
            os.environ.get("MOLECULE_INVENTORY_FILE", str(EPHEMERAL / "inventory")),
            str(play),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert "Write the AppRole credentials" in output
    for secret in (stack["secret_id"], stack["secret_id_2"]):
        assert secret not in output
    assert host.file(f"{CREDS}/vault-secret-id").content_string.strip() == stack["secret_id_2"]
    assert show(host, SERVICE, "MainPID") != pid_before
    status, body = http(host, "GET", "/health")
    assert status == 200, body
