"""`mailhelper cutoff-report --json`: the schema the phase playbooks read, with a clock
override; and the Celery/jobs settings that make the worker reliable."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import random
import threading
import time

import pytest
from mailhelper import cli
from mailhelper.celery_app import celery_config
from mailhelper.config import load_settings
from mailhelper.cutoff import percentile
from mailhelper.errors import ConfigError, JobRejectedError
from mailhelper.models import JobRun
from mailhelper.tasks import retry_delay

NOW = dt.datetime(2026, 2, 20, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def report_env(
    base_env: dict[str, str], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    for key in list(os.environ):
        if key.startswith(("MAILHELPER_", "VAULT_")) or key in (
            "DATABASE_URL",
            "REDIS_URL",
            "USE_LEGACY_JOBS",
            "LEGACY_FALLBACK",
        ):
            monkeypatch.delenv(key)
    env = {**base_env, "DATABASE_URL": db_url, "USE_LEGACY_JOBS": "true"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def add_job(
    session, backend: str, status: str, enqueued: dt.datetime, start_ms: float, end_ms: float
) -> None:
    session.add(
        JobRun(
            kind="sync_user_emails",
            backend=backend,
            status=status,
            attempts=1,
            enqueued_at=enqueued,
            started_at=enqueued + dt.timedelta(milliseconds=start_ms),
            finished_at=enqueued + dt.timedelta(milliseconds=end_ms)
            if status in ("success", "failed")
            else None,
        )
    )


def report(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli.main(["cutoff-report", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_cutoff_report_schema_and_figures(
    report_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mailhelper.db import make_engine, make_sessionmaker

    engine = make_engine(report_env["DATABASE_URL"])
    sessions = make_sessionmaker(engine)
    with sessions() as s:
        for i in range(1, 101):  # celery: 99 success, 1 failed; start i ms, finish 10*i ms
            add_job(
                s,
                "celery",
                "failed" if i == 1 else "success",
                NOW - dt.timedelta(hours=i),
                i,
                10 * i,
            )
        add_job(s, "celery", "pending", NOW - dt.timedelta(minutes=5), 0, 0)
        last_legacy = NOW - dt.timedelta(days=3)
        add_job(s, "legacy", "success", last_legacy, 5, 50)
        add_job(s, "fallback", "success", NOW - dt.timedelta(days=5), 7, 70)
        add_job(s, "legacy", "success", NOW - dt.timedelta(days=30), 5, 50)  # outside 7 days
        add_job(s, "celery", "success", NOW + dt.timedelta(hours=1), 5, 50)  # after --now
        s.commit()
    engine.dispose()

    body = report(monkeypatch, capsys, "--days", "7", "--now", NOW.isoformat())
    assert body["schema_version"] == 1
    assert body["now"] == NOW.isoformat()
    assert body["window"] == {
        "days": 7.0,
        "start": (NOW - dt.timedelta(days=7)).isoformat(),
        "end": NOW.isoformat(),
    }
    assert body["flags"] == {
        "USE_LEGACY_JOBS": True,
        "LEGACY_FALLBACK": False,
        "effective_backend": "legacy",
        "legacy_module_present": True,
        "phase": 0,
    }
    celery = body["backends"]["celery"]
    assert celery["total"] == 101
    assert celery["by_status"] == {
        "pending": 1, "queued": 0, "running": 0, "retrying": 0,
        "success": 99, "failed": 1, "expired": 0,
    }  # fmt: skip
    assert (celery["finished"], celery["success_rate"]) == (100, 0.99)
    lat = celery["latency_ms"]
    assert lat["enqueue_to_start"] == {"count": 101, "p50": 50.0, "p95": 95.0}
    assert lat["enqueue_to_finish"] == {"count": 100, "p50": 500.0, "p95": 950.0}
    assert body["backends"]["legacy"]["total"] == 1
    assert (body["legacy_jobs"], body["fallback_jobs"]) == (1, 1)
    assert body["backends"]["fallback"]["success_rate"] == 1.0
    assert body["total"]["total"] == 103
    assert body["last_legacy_job_at"] == last_legacy.isoformat()

    # the clock override also comes from the environment; an empty window has no rates
    monkeypatch.setenv("MAILHELPER_NOW", (NOW + dt.timedelta(days=60)).isoformat())
    empty = report(monkeypatch, capsys, "--days", "1")
    assert empty["total"]["total"] == 0
    assert empty["backends"]["celery"]["success_rate"] is None
    assert empty["backends"]["celery"]["latency_ms"]["enqueue_to_start"]["p95"] is None
    assert empty["last_legacy_job_at"] == last_legacy.isoformat()
    assert cli.main(["cutoff-report", "--now", "yesterday"]) == 1
    assert cli.main(["cutoff-report", "--days", "7"]) == 0
    assert "phase 0" in capsys.readouterr().out


def test_percentile_nearest_rank() -> None:
    assert percentile([], 95) is None
    assert percentile([1.0], 50) == 1.0
    values = [float(i) for i in range(1, 21)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 100)) == (
        10.0,
        19.0,
        20.0,
    )


def test_reliability_settings(base_env: dict[str, str]) -> None:
    settings = load_settings({**base_env, "REDIS_URL": "redis://mailhelper@127.0.0.1:1/0"})
    conf = celery_config(settings)
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["task_ignore_result"] is True
    assert conf["result_backend"] is None
    visibility = conf["broker_transport_options"]["visibility_timeout"]
    assert conf["task_soft_time_limit"] < conf["task_time_limit"] < visibility
    assert settings.jobs.sync_jitter < visibility
    assert settings.jobs.retry_backoff_max < visibility
    schedule = conf["beat_schedule"]["sync-all-accounts"]
    assert schedule["options"]["expires"] == settings.jobs.sync_interval


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MAILHELPER_JOB_SOFT_TIME_LIMIT": "60", "MAILHELPER_JOB_TIME_LIMIT": "60"}, "SOFT"),
        ({"MAILHELPER_JOB_TIME_LIMIT": "4000"}, "VISIBILITY_TIMEOUT"),
        ({"MAILHELPER_SYNC_JITTER": "3600"}, "MAILHELPER_SYNC_JITTER"),
        ({"MAILHELPER_JOB_RETRY_BACKOFF_MAX": "7200"}, "RETRY_BACKOFF_MAX"),
        ({"MAILHELPER_SYNC_EXPIRES": "30"}, "MAILHELPER_SYNC_EXPIRES"),
        ({"MAILHELPER_JOB_MAX_RETRIES": "1.5"}, "whole number"),
        ({"MAILHELPER_LEGACY_RETRY_DELAYS": "1,x"}, "comma-separated"),
        ({"MAILHELPER_LEGACY_RETRY_DELAYS": "-1"}, "negative"),
        ({"MAILHELPER_PENDING_GRACE": "-1"}, "negative"),
        ({"LEGACY_FALLBACK": "1"}, "LEGACY_FALLBACK must be true or false"),
    ],
)
def test_job_settings_are_checked(base_env: dict[str, str], env: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({**base_env, **env})


def test_retry_delay_grows_exponentially_with_jitter_and_a_cap(base_env: dict[str, str]) -> None:
    jobs = load_settings(
        {**base_env, "MAILHELPER_JOB_RETRY_BACKOFF": "10", "MAILHELPER_JOB_RETRY_BACKOFF_MAX": "60"}
    ).jobs
    rng = random.Random(1)
    for retries, ceiling in ((0, 10), (1, 20), (2, 40), (3, 60), (8, 60)):
        delays = [retry_delay(retries, jobs, rng) for _ in range(200)]
        assert ceiling / 2 <= min(delays) < max(delays) <= ceiling
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not a fixed value


def test_legacy_queue_is_bounded_and_drains(base_env: dict[str, str]) -> None:
    """A queue-full fault cannot be produced on demand with real syncs: a runner that blocks
    until released stands in for a long job."""
    from mailhelper.legacy_jobs import LegacyJobQueue

    release = threading.Event()
    ran: list[tuple[int, bool]] = []

    def runner(job_id: int, can_retry: bool) -> bool:
        release.wait(60)
        ran.append((job_id, can_retry))
        return job_id == 2 and can_retry  # job 2 asks for retries while it may

    queue = LegacyJobQueue(runner, maxsize=2, workers=1, retry_delays=(0.05, 0.05))
    queue.submit(1)
    deadline = time.monotonic() + 30
    while queue.size() and time.monotonic() < deadline:  # the worker took job 1
        time.sleep(0.01)
    queue.submit(2)
    queue.submit(3)
    with pytest.raises(JobRejectedError, match="full"):
        queue.submit(4)
    release.set()
    deadline = time.monotonic() + 30
    while len(ran) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert queue.shutdown(30)
    assert sorted(ran) == [(1, True), (2, False), (2, True), (2, True), (3, True)]
    with pytest.raises(JobRejectedError, match="shutting down"):
        queue.submit(5)
