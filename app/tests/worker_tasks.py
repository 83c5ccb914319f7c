"""Extra tasks and job kinds the test and benchmark workers load (`mailhelper worker
--include tests.worker_tasks`)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded
from mailhelper.celery_app import broker_redis, celery_app
from mailhelper.job_execution import HANDLERS
from mailhelper.models import JobRun

PLAIN_LATENCY_KEY = "mailhelper:test:plain-latency"


@celery_app.task(name="tests.plain_noop")
def plain_noop(enqueued_at: float) -> None:
    """A bare task (no dispatcher, no job_runs): records enqueue->start in Redis."""
    broker_redis().rpush(PLAIN_LATENCY_KEY, time.time() - enqueued_at)


def _slow_first_attempt(_rt: object, job: JobRun) -> None:
    """A job whose first attempt outlasts any short soft time limit; later ones are quick."""
    if job.attempts == 1:
        time.sleep(30)


def _outlast_limits(seconds: float = 30) -> None:
    """Stuck where the soft time limit cannot stop it (the exception is swallowed, as a
    C call or a careless `except` would)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        with contextlib.suppress(SoftTimeLimitExceeded):
            time.sleep(left)


def _hard_limit_first_attempt(_rt: object, job: JobRun) -> None:
    if job.attempts == 1:
        _outlast_limits()


def _hard_limit_always(_rt: object, _job: JobRun) -> None:
    _outlast_limits()


HOLD_FILE_ENV = "MH_TEST_HOLD_FILE"


def _hold(_rt: object, _job: JobRun) -> None:
    """Blocks while the file named by $MH_TEST_HOLD_FILE exists (only the processes that
    have the variable: a legacy-queue holder in the tests, never the session worker)."""
    path = os.environ.get(HOLD_FILE_ENV)
    while path and Path(path).exists():
        time.sleep(0.05)


HANDLERS["test_slow_first_attempt"] = _slow_first_attempt
HANDLERS["test_hard_limit_first_attempt"] = _hard_limit_first_attempt
HANDLERS["test_hard_limit_always"] = _hard_limit_always
HANDLERS["test_hold"] = _hold
