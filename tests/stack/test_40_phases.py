"""The phase walk 0 -> 1 -> 2 -> 3 -> rollback to 2 -> 3 on two app hosts, under a load of
sync requests and API reads: every gate refuses when its figure is short (and changes
nothing), force overrides and is recorded, no request fails, no job is lost, no message is
stored twice."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from loadgen import Client, Load
from stacklib import TIMINGS, USERS, PlaybookResult, Stack, imap_subjects, run_playbook

APPS = ("app1", "app2")
RELEASE_HOSTS = ("app1", "app2", "worker1")
FORCE_REASON = "stack test: phase 1 shortened to minutes"


@pytest.fixture(scope="module")
def load(deployed: Stack, synced: dict[str, dict[str, Any]]) -> Iterator[Load]:
    clients = [
        Client(synced[u]["api"].headers["Authorization"][7:], synced[u]["account"]) for u in USERS
    ]
    running = Load([deployed.app_url(h) for h in APPS], clients).start()
    yield running
    running.stop()


def phase_run(name: str, *extra: str) -> PlaybookResult:
    result = run_playbook(f"playbooks/{name}.yml", *extra, log=f"{name}-{int(time.time())}")
    TIMINGS[f"{name} {' '.join(extra)}"[:60]] = result.seconds
    return result


def phases(stack: Stack) -> dict[str, int]:
    return {h: stack.health(h)["jobs"]["phase"] for h in APPS}


def refused_without_change(result: PlaybookResult, figure: str) -> None:
    assert result.returncode != 0, result.tail()
    assert "refuses" in result.output, result.tail()
    assert figure in result.output.split("refuses", 1)[1], result.tail()
    changed = {h: c["changed"] for h, c in result.recap.items() if c["changed"]}
    assert not changed, result.changed_tasks()


def quiet_days_since_phase2(stack: Stack, now: dt.datetime | None = None) -> str:
    """A phase 3 window that starts when phase 2 was entered (the walk takes minutes) and
    ends at `now` (default: this moment)."""
    shown = stack.exec("app1", ["/usr/local/sbin/mail-helper-admin", "phase", "show"]).stdout
    since = dt.datetime.fromisoformat(json.loads(shown)["since"])
    end = now or dt.datetime.now(dt.UTC)
    return f"{(end - since).total_seconds() / 86400 + 1e-6:.8f}"


def inject_job(stack: Stack, backend: str, status: str, count: int = 1) -> None:
    """Rows a gate must notice (the test's own constants, not user input)."""
    stack.psql(
        "INSERT INTO job_runs (kind, backend, status, attempts, enqueued_at, started_at,"  # noqa: S608
        " finished_at, error, force) SELECT 'gate_test', "
        f"'{backend}', '{status}', 1, now(), now(), now(), 'injected', false"
        f" FROM generate_series(1, {int(count)})"
    )


@pytest.fixture
def injected(deployed: Stack) -> Iterator[None]:
    yield
    deployed.psql("DELETE FROM job_runs WHERE kind = 'gate_test'")


def test_phase1_flips_every_host(deployed: Stack, load: Load) -> None:
    assert phases(deployed) == {"app1": 0, "app2": 0}
    result = phase_run("phase1_parallel")
    assert result.returncode == 0, result.tail()
    assert phases(deployed) == {"app1": 1, "app2": 1}
    for host in RELEASE_HOSTS:
        state = deployed.state_file(host)
        assert state["phase"] == 1, host
        assert state["history"][-1]["from_phase"] == 0
    recorded = deployed.health("app2")["jobs"]["recorded_phase"]
    assert recorded["to_phase"] == 1
    assert recorded["forced"] is False


def test_phase1_again_changes_nothing(deployed: Stack, load: Load) -> None:
    result = phase_run("phase1_parallel")
    assert result.returncode == 0, result.tail()
    assert "phase 1 already: nothing to do" in result.output
    assert not any(c["changed"] for c in result.recap.values()), result.changed_tasks()


def test_phase2_gate_refuses_a_phase1_shorter_than_its_minimum(deployed: Stack, load: Load) -> None:
    refused_without_change(phase_run("phase2_prepare"), "days in phase 1")
    assert phases(deployed) == {"app1": 1, "app2": 1}


def test_phase2_gate_refuses_a_fallback_job(deployed: Stack, load: Load, injected: None) -> None:
    inject_job(deployed, "fallback", "success")
    refused_without_change(
        phase_run("phase2_prepare", "-e", "cutoff_phase1_min_days=0"), "fallback jobs"
    )


def test_phase2_gate_refuses_a_low_success_rate(
    deployed: Stack, load: Load, injected: None
) -> None:
    inject_job(deployed, "celery", "failed", count=500)
    refused_without_change(
        phase_run("phase2_prepare", "-e", "cutoff_phase1_min_days=0"), "Celery success rate"
    )


def test_phase2_forced_past_its_gate_and_recorded(deployed: Stack, load: Load) -> None:
    result = phase_run(
        "phase2_prepare",
        "-e",
        json.dumps({"cutoff_force": True, "cutoff_force_reason": FORCE_REASON}),
    )
    assert result.returncode == 0, result.tail()
    assert "GATE FORCED" in result.output
    assert phases(deployed) == {"app1": 2, "app2": 2}
    recorded = deployed.health("app1")["jobs"]["recorded_phase"]
    assert recorded["forced"] is True
    assert recorded["reason"] == FORCE_REASON
    assert deployed.state_file("app2")["history"][-1]["forced"] is True


def test_phase3_gate_refuses_before_the_cutoff_date(deployed: Stack, load: Load) -> None:
    result = phase_run("phase3_cutoff", "-e", "cutoff_now=2026-02-20T00:00:00")
    refused_without_change(result, "date (UTC) | 2026-02-20")


def test_phase3_gate_refuses_a_recent_legacy_job(
    deployed: Stack, load: Load, injected: None
) -> None:
    inject_job(deployed, "legacy", "success")
    # The gate measures at its own `now`, seconds later on a busy machine, and its window
    # (phase 2 is only seconds old here) would slide past the injected job: pin its `now`
    # just after the injection.
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    result = phase_run(
        "phase3_cutoff",
        "-e",
        "cutoff_phase2_min_days=0",
        "-e",
        f"cutoff_phase3_quiet_days={quiet_days_since_phase2(deployed, now)}",
        "-e",
        f"cutoff_now={now.isoformat()}",
    )
    refused_without_change(result, "legacy and fallback jobs")


def quiet_days_since_last_legacy_job(stack: Stack, timeout: float = 300) -> str:
    """The longest phase 3 window without a legacy or fallback job (the walk takes minutes),
    once a Celery job enqueued in it has finished: on a busy machine the jobs of the last
    seconds may all still be queued, and a gate without a finished Celery job refuses."""
    deadline = time.monotonic() + timeout
    while True:
        report = json.loads(stack.admin("app1", ["cutoff-report", "--days", "1", "--json"]))
        assert report["last_legacy_job_at"], "the walk started in phase 0: legacy jobs ran"
        last = dt.datetime.fromisoformat(report["last_legacy_job_at"])
        # One second of margin keeps the last legacy job out of the window.
        days = f"{((dt.datetime.now(dt.UTC) - last).total_seconds() - 1) / 86400:.8f}"
        window = json.loads(stack.admin("app1", ["cutoff-report", "--days", days, "--json"]))
        celery = window["backends"].get("celery", {})
        if window["legacy_jobs"] + window["fallback_jobs"] == 0 and celery.get("finished"):
            return days
        assert time.monotonic() < deadline, f"no quiet window with a finished Celery job: {window}"
        time.sleep(5)


def phase3(stack: Stack, synced: dict[str, dict[str, Any]]) -> PlaybookResult:
    """Phase 3 with phase 2's minimum shrunk to the walk's minutes and the quiet window to the
    time since the last legacy job; the sync probe uses alice's account."""
    account = synced["alice"]["account"]
    return phase_run(
        "phase3_cutoff",
        "-e",
        "cutoff_phase2_min_days=0",
        "-e",
        f"cutoff_phase3_quiet_days={quiet_days_since_last_legacy_job(stack)}",
        "-e",
        f"cutoff_probe_account_id={account}",
    )


def test_phase3_cuts_the_legacy_queue_off(
    deployed: Stack, synced: dict[str, dict[str, Any]], load: Load
) -> None:
    result = phase3(deployed, synced)
    assert result.returncode == 0, result.tail()
    assert phases(deployed) == {"app1": 3, "app2": 3}
    for host in RELEASE_HOSTS:
        check = deployed.exec(
            host,
            [
                "sh",
                "-c",
                "find /opt/mail-helper/current/ -name 'legacy_jobs*'; "
                "grep -c '^USE_LEGACY_JOBS\\|^LEGACY_FALLBACK' /etc/mail-helper/mailhelper.conf",
            ],
            check=False,
        ).stdout.split()
        assert check == ["0"], f"{host}: {check}"
        backups = deployed.exec(
            host, ["find", "/var/backups/mail-helper", "-name", "legacy_jobs.py"]
        ).stdout
        assert backups.strip(), f"{host}: no backup of the legacy module"
    for host in APPS:
        jobs = deployed.health(host)["jobs"]
        assert jobs["legacy_module_present"] is False
        assert jobs["USE_LEGACY_JOBS"] is None
    assert "database backup: /" in result.output


def test_a_leftover_legacy_flag_is_a_clear_startup_error(deployed: Stack) -> None:
    # The web app's start (gunicorn imports mailhelper.wsgi) with the service's identity and
    # credentials, but a copy of its configuration that still sets the flag.
    script = (
        "cp /etc/mail-helper/mailhelper.conf /run/leftover.conf"
        " && echo USE_LEGACY_JOBS=true >> /run/leftover.conf"
        " && chgrp mail-helper /run/leftover.conf"
        " && systemd-run --quiet --pipe --wait --collect --service-type=exec"
        " -p User=mail-helper -p Group=mail-helper"
        " -p Environment=MAILHELPER_CONFIG_FILE=/run/leftover.conf"
        " -p LoadCredential=vault-role-id:/etc/mail-helper/credentials/vault-role-id"
        " -p LoadCredential=vault-secret-id:/etc/mail-helper/credentials/vault-secret-id"
        " /opt/mail-helper/current/venv/bin/python -c 'import mailhelper.wsgi'"
        "; rc=$?; rm -f /run/leftover.conf; exit $rc"
    )
    out = deployed.exec("app2", ["sh", "-c", script], check=False)
    assert out.returncode != 0
    output = out.stdout + out.stderr
    assert "USE_LEGACY_JOBS=true but the legacy job queue" in output, output[-2000:]


def test_rollback_from_phase3_restores_the_module(deployed: Stack, load: Load) -> None:
    result = phase_run("rollback")
    assert result.returncode == 0, result.tail()
    assert phases(deployed) == {"app1": 2, "app2": 2}
    for host in APPS:
        jobs = deployed.health(host)["jobs"]
        assert jobs["legacy_module_present"] is True
        assert jobs["USE_LEGACY_JOBS"] is False
    assert deployed.health("app1")["jobs"]["recorded_phase"]["source"] == "rollback.yml"


def test_phase3_again_then_a_rerun_changes_nothing(
    deployed: Stack, synced: dict[str, dict[str, Any]], load: Load
) -> None:
    result = phase3(deployed, synced)
    assert result.returncode == 0, result.tail()
    assert phases(deployed) == {"app1": 3, "app2": 3}
    again = phase_run("phase3_cutoff")
    assert again.returncode == 0, again.tail()
    assert not any(c["changed"] for c in again.recap.values()), again.changed_tasks()


def test_site_keeps_the_phase(deployed: Stack, load: Load) -> None:
    result = run_playbook("playbooks/site.yml", log="site-after-phase3")
    assert result.returncode == 0, result.tail()
    assert not any(c["changed"] for c in result.recap.values()), result.changed_tasks()
    assert phases(deployed) == {"app1": 3, "app2": 3}


def test_load_saw_no_failed_request_no_lost_job_no_duplicate(deployed: Stack, load: Load) -> None:
    load.stop()
    TIMINGS.update({f"load: {k}": float(v) for k, v in sorted(load.results.items())})
    TIMINGS["load: accepted sync jobs"] = float(len(load.jobs))
    for host in APPS:
        for i, entry in enumerate(deployed.state_file(host)["history"]):
            TIMINGS[f"flip {host} #{i + 1} {entry['from_phase']}->{entry['to_phase']}"] = float(
                entry["seconds"]
            )
    assert load.failures == [], load.failures[:20]
    assert len(load.jobs) > 50
    assert load.unfinished_jobs(deployed.app_url("app1"), timeout=300) == {}
    totals = deployed.psql(
        "SELECT count(*), count(DISTINCT (account_id, folder_id, uidvalidity, uid)) FROM messages"
    ).split("|")
    assert totals[0] == totals[1]
    # alice's and bob's mailboxes, and the demo login's (playbooks/demo_login.yml)
    expected = sum(len(imap_subjects(deployed, user)) for user in (*USERS, "demo"))
    assert int(totals[0]) == expected
