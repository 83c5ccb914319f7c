"""Redelivery after SIGKILL, prefetch 1, Redis restarted with jobs queued (AOF), soft and
hard time limits."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from mailhelper import job_runs
from mailhelper.job_execution import KIND_NOOP
from mailhelper.models import Message
from mailhelper.runtime import Runtime
from mailhelper.tasks import after_hard_time_limit
from sqlalchemy import func, select

from tests.conftest import make_mailbox
from tests.jobsenv import Worker, wait_job, wait_until
from tests.mailgen import message
from tests.servers import DovecotServer, RedisServer

MakeRuntime = Callable[..., Runtime]


def stored(rt: Runtime, account_id: int) -> tuple[int, int]:
    """(rows, distinct UIDs) of an account."""
    with rt.sessions() as s:
        return s.execute(
            select(func.count(), func.count(func.distinct(Message.uid))).where(
                Message.account_id == account_id
            )
        ).one()


def test_worker_killed_mid_sync_job_is_redelivered_and_completes(
    jobs_env: dict[str, str],
    jobs_runtime_factory: MakeRuntime,
    redis_server: RedisServer,
    dovecot: DovecotServer,
    tmp_path: Path,
) -> None:
    # own Redis database (own unacked set) and queue, short visibility timeout
    env = {
        **jobs_env,
        "REDIS_URL": redis_server.url(1),
        "MAILHELPER_CELERY_QUEUE": "mh-kill",
        "MAILHELPER_JOB_SOFT_TIME_LIMIT": "7",
        "MAILHELPER_JOB_TIME_LIMIT": "8",
        "MAILHELPER_BROKER_VISIBILITY_TIMEOUT": "9",
        "MAILHELPER_SYNC_BATCH_MESSAGES": "20",
    }
    rt = jobs_runtime_factory(**env)
    box = make_mailbox(rt, dovecot)
    total = 1200
    rng = random.Random(7)
    box.dovecot.write_maildir(
        box.imap_user, [(message(i, 4000, rng=rng), "S") for i in range(total)]
    )
    first = Worker(env, tmp_path, name="victim", concurrency=1).start()
    job = rt.jobs.submit_sync(box.user_id, box.account_id, force=True)
    wait_job(rt, job.id, ("running",))
    wait_until(lambda: stored(rt, box.account_id)[0] >= 40, 30, 0.01)
    # prefetch 1: while the sync runs, a second job is not reserved by the busy worker
    second = rt.jobs.submit(KIND_NOOP)
    client = redis_server.client(1)
    assert client.llen("mh-kill") == 1
    first.kill()
    at_kill = stored(rt, box.account_id)[0]
    assert 0 < at_kill < total  # killed in the middle of the sync
    assert wait_job(rt, job.id, ("running",)).attempts == 1
    assert client.hlen("unacked") == 1  # the sync's message, not acked, waits for redelivery

    rescuer = Worker(env, tmp_path, name="rescuer", concurrency=1).start()
    try:
        assert wait_job(rt, second.id, ("success",), 30).attempts == 1
        done = wait_job(rt, job.id, ("success", "failed"))
    finally:
        client.close()
        rescuer.stop()
    assert (done.status, done.attempts) == ("success", 2)  # job_runs shows the retry
    assert stored(rt, box.account_id) == (total, total)  # no message stored twice


def test_redis_restart_loses_no_queued_job(
    jobs_env: dict[str, str],
    jobs_runtime_factory: MakeRuntime,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    env = {**jobs_env, "REDIS_URL": redis_server.url(2), "MAILHELPER_CELERY_QUEUE": "mh-restart"}
    rt = jobs_runtime_factory(**env)
    jobs = [rt.jobs.submit(KIND_NOOP) for _ in range(20)]
    assert {j.status for j in jobs} == {"queued"}
    redis_server.restart(hard=True)  # SIGKILL: only the append-only file survives
    client = redis_server.client(2)
    assert client.llen("mh-restart") == 20
    client.close()
    worker = Worker(env, tmp_path, name="after-restart", concurrency=2).start()
    try:
        for j in jobs:
            assert wait_job(rt, j.id, ("success", "failed")).status == "success"
    finally:
        worker.stop()


def test_soft_time_limit_is_a_transient_error_retried_before_the_hard_limit(
    jobs_env: dict[str, str],
    jobs_runtime_factory: MakeRuntime,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    env = {
        **jobs_env,
        "REDIS_URL": redis_server.url(4),
        "MAILHELPER_CELERY_QUEUE": "mh-soft",
        "MAILHELPER_JOB_SOFT_TIME_LIMIT": "1",
        "MAILHELPER_JOB_TIME_LIMIT": "5",
        "MAILHELPER_BROKER_VISIBILITY_TIMEOUT": "6",
    }
    rt = jobs_runtime_factory(**env)
    worker = Worker(
        env, tmp_path, name="soft", concurrency=1, extra=("--include=tests.worker_tasks",)
    ).start()
    try:
        # the first attempt sleeps 30 s: the soft limit (1 s) stops it long before the hard
        # limit (5 s) would kill the process, and the retry succeeds
        job = rt.jobs.submit("test_slow_first_attempt")
        done = wait_job(rt, job.id, ("success", "failed"))
    finally:
        worker.stop()
    assert "Soft time limit (1.0s) exceeded" in worker.log()
    assert (done.status, done.attempts, done.error) == ("success", 2, None)
    assert "Hard time limit" not in worker.log()


def test_hard_time_limit_retries_then_fails_the_job_instead_of_leaving_it_running(
    jobs_env: dict[str, str],
    jobs_runtime_factory: MakeRuntime,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    env = {
        **jobs_env,
        "REDIS_URL": redis_server.url(5),
        "MAILHELPER_CELERY_QUEUE": "mh-hard",
        "MAILHELPER_JOB_SOFT_TIME_LIMIT": "1",
        "MAILHELPER_JOB_TIME_LIMIT": "3",
        "MAILHELPER_BROKER_VISIBILITY_TIMEOUT": "6",
        "MAILHELPER_JOB_MAX_RETRIES": "1",
    }
    rt = jobs_runtime_factory(**env)
    worker = Worker(
        env, tmp_path, name="hard", concurrency=2, extra=("--include=tests.worker_tasks",)
    ).start()
    try:
        # both ignore the soft limit, so the hard limit kills their pool process; the first
        # is quick on its retry, the second never is and has one retry (max retries 1)
        once = rt.jobs.submit("test_hard_limit_first_attempt")
        always = rt.jobs.submit("test_hard_limit_always")
        once_done = wait_job(rt, once.id, ("success", "failed"))
        always_done = wait_job(rt, always.id, ("success", "failed"))
    finally:
        worker.stop()
    assert "Hard time limit (3.0s) exceeded" in worker.log()
    assert (once_done.status, once_done.attempts, once_done.error) == ("success", 2, None)
    assert (always_done.status, always_done.attempts) == ("failed", 2)
    assert always_done.error.startswith("TimeLimitExceeded: hard time limit (3 s) exceeded")
    assert always_done.finished_at is not None


def test_hard_time_limit_handler_acts_on_rows_not_yet_marked_running(
    jobs_env: dict[str, str], jobs_runtime_factory: MakeRuntime, redis_server: RedisServer
) -> None:
    """Celery reports the hard limit before the pool process is dead; on a busy host the
    process may not have marked the row `running` yet (no worker here: rows as left then)."""
    env = {
        **jobs_env,
        "REDIS_URL": redis_server.url(6),
        "MAILHELPER_CELERY_QUEUE": "mh-hard-unit",
        "MAILHELPER_JOB_MAX_RETRIES": "1",
    }
    rt = jobs_runtime_factory(**env)
    client = redis_server.client(6)
    try:
        queued = rt.jobs.submit(KIND_NOOP)  # published, never started
        assert (queued.status, client.llen("mh-hard-unit")) == ("queued", 1)
        assert after_hard_time_limit(rt, queued.id) == "retry"
        assert wait_job(rt, queued.id, ("retrying",)).error.startswith("TimeLimitExceeded")
        assert client.llen("mh-hard-unit") == 2  # the retry message
        assert after_hard_time_limit(rt, queued.id) == "skipped"  # its retry is on its way
        # a second attempt that outlived the limit: no retry left (max retries 1)
        job_runs.start(rt.sessions, queued.id)
        job_runs.start(rt.sessions, queued.id)
        assert after_hard_time_limit(rt, queued.id) == "failed"
        assert wait_job(rt, queued.id, ("failed",)).attempts == 2
        assert job_runs.start(rt.sessions, queued.id) is None  # a late start cannot undo it
        assert after_hard_time_limit(rt, queued.id) == "skipped"
    finally:
        client.close()
