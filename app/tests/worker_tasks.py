"""Extra tasks and job kinds the test and benchmark workers load (`mailhelper worker
--include tests.worker_tasks`)."""

from __future__ import annotations

import time

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


HANDLERS["test_slow_first_attempt"] = _slow_first_attempt
