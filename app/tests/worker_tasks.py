"""Extra tasks the test and benchmark workers load (`mailhelper worker --include`)."""

from __future__ import annotations

import time

from mailhelper.celery_app import broker_redis, celery_app

PLAIN_LATENCY_KEY = "mailhelper:test:plain-latency"


@celery_app.task(name="tests.plain_noop")
def plain_noop(enqueued_at: float) -> None:
    """A bare task (no dispatcher, no job_runs): records enqueue->start in Redis."""
    broker_redis().rpush(PLAIN_LATENCY_KEY, time.time() - enqueued_at)
