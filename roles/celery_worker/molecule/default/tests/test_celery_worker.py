"""Verify the celery_worker role: worker and beat units, credentials only through
LoadCredential=, jobs of the app run on the worker, graceful restarts, no secret exposed."""

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
WORKER = "mail-helper-celery-worker"
BEAT = "mail-helper-celery-beat"
USER = "mail-helper"
CREDS = "/etc/mail-helper/worker-credentials"
CURRENT = "/opt/mail-helper/current"
BEAT_STATE = "/var/lib/mail-helper-celery-beat"
ADMIN = "/usr/local/sbin/mail-helper-admin"


@pytest.fixture(scope="module")
def stack() -> dict:
    return json.loads((EPHEMERAL / "stack.json").read_text())


@pytest.fixture(scope="module")
def restart() -> dict:
    return json.loads((EPHEMERAL / "restart.json").read_text())


@pytest.fixture(scope="module")
def secrets(stack) -> list[str]:
    return [
        stack["approles"]["worker"]["secret_id"],
        stack["approles"]["worker"]["secret_id_2"],
        stack["secret_id"],
        stack["postgresql"]["app_password"],
        stack["postgresql-migrator"]["password"],
        stack["redis"]["app_password"],
        stack["flask"]["secret_key"],
        (EPHEMERAL / "imap-demo-password").read_text().strip(),
    ]


def show(host, unit: str, prop: str) -> str:
    return host.check_output(f"systemctl show -p {prop} --value {unit}")


def psql(host, query: str) -> str:
    return host.check_output("runuser -u postgres -- psql -d mailhelper -Atc " + shlex.quote(query))


def unit_pids(host, unit: str) -> list[str]:
    """Every process of the unit (main process and pool processes)."""
    rows = host.check_output("ps -e -o pid=,unit=").splitlines()
    return [
        pid
        for pid, _, name in (r.strip().partition(" ") for r in rows)
        if name.strip() == f"{unit}.service"
    ]


def as_worker(host, *argv: str, timeout: int = 60):
    """A command of the release as the worker identity (its config and credentials)."""
    props = [
        f"User={USER}",
        f"Group={USER}",
        "Environment=MAILHELPER_CONFIG_FILE=/etc/mail-helper/mailhelper.conf",
        f"LoadCredential=vault-role-id:{CREDS}/vault-role-id",
        f"LoadCredential=vault-secret-id:{CREDS}/vault-secret-id",
        f"RuntimeMaxSec={timeout}",
    ]
    cmd = ["systemd-run", "--quiet", "--pipe", "--wait", "--collect", "--service-type=exec"]
    cmd += [f"--property={p}" for p in props]
    cmd += ["--", *argv]
    return host.run(" ".join(shlex.quote(a) for a in cmd))


@pytest.mark.parametrize("unit", [WORKER, BEAT])
def test_units_enabled_and_active(host, unit):
    service = host.service(unit)
    assert service.is_enabled
    assert service.is_running


@pytest.mark.parametrize("unit", [WORKER, BEAT])
def test_units_run_as_the_app_user_from_current(host, unit):
    pids = unit_pids(host, unit)
    assert pids
    for pid in pids:
        assert host.check_output(f"ps -o user= -p {pid}") == USER
    main = show(host, unit, "MainPID")
    cmdline = host.check_output(f"tr '\\0' ' ' < /proc/{main}/cmdline")
    assert f"{CURRENT}/venv/bin/mailhelper" in cmdline


def test_worker_options_from_variables(host):
    text = host.check_output(f"systemctl cat {WORKER}")
    # side_effect.yml re-deployed with concurrency 2
    assert "--concurrency 2" in text
    assert "--max-tasks-per-child 1000" in text
    assert "--loglevel INFO" in text
    pool = host.check_output(f"ps -o pid= --ppid {show(host, WORKER, 'MainPID')}").split()
    assert len(pool) >= 2


def test_graceful_stop_settings(host):
    assert show(host, WORKER, "KillMode") == "mixed"
    assert show(host, WORKER, "KillSignal") == "15"  # SIGTERM: warm shutdown
    assert show(host, WORKER, "TimeoutStopFailureMode") == "abort"
    assert show(host, WORKER, "WatchdogSignal") == "3"  # SIGQUIT: cold shutdown, requeue
    assert show(host, WORKER, "TimeoutStopUSec") == "4min"  # converge: 240 s
    assert show(host, WORKER, "TimeoutAbortUSec") == "30s"


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
        ("User", USER),
    ],
)
@pytest.mark.parametrize("unit", [WORKER, BEAT])
def test_hardening(host, unit, prop, value):
    assert show(host, unit, prop) == value


def test_container_dropin_only_relaxes_what_containers_lack(host):
    for unit in (WORKER, BEAT):
        text = host.file(f"/etc/systemd/system/{unit}.service.d/container.conf").content_string
        assert "PrivateUsers=false" in text
        assert show(host, unit, "PrivateUsers") == "no"
        # the unit itself keeps the production settings
        unit_file = host.file(f"/etc/systemd/system/{unit}.service").content_string
        assert "PrivateUsers=true" in unit_file


def test_credentials_only_through_load_credential(host):
    for unit in (WORKER, BEAT):
        text = host.check_output(f"systemctl cat {unit}")
        assert f"LoadCredential=vault-role-id:{CREDS}/vault-role-id" in text
        assert f"LoadCredential=vault-secret-id:{CREDS}/vault-secret-id" in text
    d = host.file(CREDS)
    assert (d.user, d.group, d.mode) == ("root", "root", 0o700)
    for name in ("vault-role-id", "vault-secret-id"):
        f = host.file(f"{CREDS}/{name}")
        assert (f.user, f.group, f.mode) == ("root", "root", 0o600)
    assert host.run(f"runuser -u {USER} -- cat {CREDS}/vault-secret-id").rc != 0


def test_credentials_files_hold_the_worker_approle(host, stack):
    worker = stack["approles"]["worker"]
    assert host.file(f"{CREDS}/vault-role-id").content_string.strip() == worker["role_id"]
    assert host.file(f"{CREDS}/vault-secret-id").content_string.strip() == worker["secret_id"]


def test_restart_record_follows_release_and_config(host):
    """The units restart when `current` or the config file changes, whoever changed them:
    the role keeps what they were started with next to the config file."""
    mark = host.file("/etc/mail-helper/mail-helper-celery-worker.deployed").content_string
    release = host.file(CURRENT).linked_to
    config_sha1 = host.check_output("sha1sum /etc/mail-helper/mailhelper.conf").split()[0]
    assert f"release={release}\n" in mark
    assert f"config={config_sha1}\n" in mark


def test_beat_keeps_its_schedule_in_its_state_dir(host):
    d = host.file(BEAT_STATE)
    assert (d.user, d.mode) == (USER, 0o700)
    files = host.check_output(f"ls {BEAT_STATE}").split()
    assert any(name.startswith("celerybeat-schedule") for name in files), files
    unit_text = host.check_output(f"systemctl cat {BEAT}")
    assert f"--schedule {BEAT_STATE}/celerybeat-schedule" in unit_text


def test_worker_answers_ping(host):
    result = as_worker(
        host,
        f"{CURRENT}/venv/bin/celery",
        "-A",
        "mailhelper.celery_app",
        "inspect",
        "ping",
        "--timeout",
        "10",
        "--json",
    )
    assert result.rc == 0, result.stderr
    replies = json.loads(result.stdout.strip().splitlines()[-1])
    assert any(r.get("ok") == "pong" for r in replies.values()), replies


def test_a_sync_job_of_the_app_runs_on_the_worker(host, restart):
    account = int(restart["direct_account_id"])  # Dovecot directly, not the slow relay
    result = host.run(f"{ADMIN} enqueue-sync --account {account} --wait 180 --json")
    assert result.rc == 0, result.stdout + result.stderr
    job = json.loads(result.stdout.strip().splitlines()[-1])
    assert (job["backend"], job["status"]) == ("celery", "success"), job
    count = psql(host, f"SELECT count(*) FROM messages WHERE account_id = {account}")  # noqa: S608
    assert int(count) > 0


def test_graceful_restart_finished_the_running_job(host, restart):
    assert restart["status_seen"] == "running"
    assert restart["pid_before"] != restart["pid_after"], "the deployment did not restart it"
    status, attempts, backend, finished = restart["job_after"]
    # one attempt, finished while the deployment waited for the old worker's warm shutdown
    assert (status, attempts, backend) == ("success", "1", "celery"), restart
    assert restart["t0"] <= int(finished) <= restart["t1"], restart
    journal = host.check_output(f"journalctl --no-pager -o cat -u {WORKER}")
    assert "Warm shutdown" in journal


def test_no_secret_in_units_command_lines_environment_or_journal(host, secrets):
    texts = [
        host.check_output(f"systemctl cat {WORKER} {BEAT}"),
        host.check_output(f"systemctl show {WORKER} {BEAT}"),
        host.check_output("ps -eo args"),
        host.run("journalctl --no-pager -o cat").stdout,
    ]
    for unit in (WORKER, BEAT):
        for pid in unit_pids(host, unit):
            env = host.check_output(
                f"runuser -u {USER} -- cat /proc/{pid}/environ | tr '\\0' '\\n'"
            )
            assert "CREDENTIALS_DIRECTORY=" in env
            texts.append(env)
    for secret in secrets:
        for text in texts:
            assert secret not in text


def test_zz_beat_removed_where_not_enabled(host, stack):
    """Last: the same deployment with celery_worker_beat_enabled=false stops, disables and
    removes the beat; the worker keeps running."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(EPHEMERAL / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(Path(__file__).resolve().parents[4]),
        "ANSIBLE_NOCOLOR": "1",
    }
    run = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            os.environ.get("MOLECULE_INVENTORY_FILE", str(EPHEMERAL / "inventory")),
            "-e",
            "celery_worker_beat_enabled=false",
            "-e",
            "celery_worker_concurrency=2",
            str(Path(__file__).resolve().parents[1] / "converge.yml"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    for secret in (stack["approles"]["worker"]["secret_id"],):
        assert secret not in output
    assert not host.file(f"/etc/systemd/system/{BEAT}.service").exists
    assert host.run(f"systemctl is-active {BEAT}").stdout.strip() != "active"
    assert host.service(WORKER).is_running
