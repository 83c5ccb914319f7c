"""Celery tasks: `sync_user_emails`, the beat-driven `sync_all_accounts` fan-out and the
`reconcile_jobs` reconciler. State lives in `job_runs`; Celery results are ignored.

Retries: transient errors (`TransientSyncError`, the soft time limit) are retried with
exponential backoff and jitter up to `MAILHELPER_JOB_MAX_RETRIES`; permanent errors fail at
once. A redelivered message (worker lost) runs the job again: the sync is idempotent.
"""

from __future__ import annotations

import logging
import random
import secrets
from typing import Any

from celery import Task, signals
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select

from mailhelper import fanout_lock, job_runs
from mailhelper.celery_app import (
    TASK_RECONCILE,
    TASK_RUN_JOB,
    TASK_SYNC,
    TASK_SYNC_ALL,
    broker_redis,
    celery_app,
    worker_runtime,
)
from mailhelper.config import JobSettings
from mailhelper.errors import TransientSyncError
from mailhelper.job_execution import KIND_SYNC, Outcome, run_job
from mailhelper.models import MailAccount

log = logging.getLogger(__name__)

TRANSIENT = (TransientSyncError, SoftTimeLimitExceeded)


def retry_delay(retries: int, jobs: JobSettings, rng: random.Random | None = None) -> float:
    """Exponential backoff (base * 2^retries, capped) with "equal jitter": a random delay
    between half and all of it, so retries of many accounts do not arrive together."""
    ceiling = min(jobs.retry_backoff_max, jobs.retry_backoff * (2**retries))
    return (rng or random).uniform(ceiling / 2, ceiling)


def _execute(
    task: Task, job_id: int, account_id: int | None = None, lock_token: str | None = None
) -> str:
    rt = worker_runtime()
    jobs = rt.settings.jobs
    retries = task.request.retries
    outcome, _job = run_job(rt, job_id, can_retry=retries < jobs.max_retries, transient=TRANSIENT)
    if outcome is Outcome.RETRY:
        if lock_token and account_id is not None:
            fanout_lock.extend(broker_redis(), account_id, lock_token, jobs.account_lock_ttl)
        raise task.retry(countdown=retry_delay(retries, jobs), max_retries=jobs.max_retries)
    if lock_token and account_id is not None:
        fanout_lock.release(broker_redis(), account_id, lock_token)
    return outcome.value


@celery_app.task(name=TASK_SYNC, bind=True)
def sync_user_emails(
    self: Task,
    user_id: int,
    account_id: int,
    job_id: int | None = None,
    lock_token: str | None = None,
) -> str:
    """Sync one account. Without `job_id` (a bare `delay()`), the job is recorded here."""
    if job_id is None:
        rt = worker_runtime()
        job = job_runs.create(
            rt.sessions, KIND_SYNC, "celery", user_id=user_id, account_id=account_id
        )
        job_runs.handed_over(rt.sessions, job)
        job_id = job.id
        self.request.kwargs = {**(self.request.kwargs or {}), "job_id": job_id}
    return _execute(self, job_id, account_id, lock_token)


@celery_app.task(name=TASK_RUN_JOB, bind=True)
def run_recorded_job(self: Task, job_id: int) -> str:
    """Any other recorded job kind (e.g. `noop`)."""
    return _execute(self, job_id)


@celery_app.task(name=TASK_SYNC_ALL)
def sync_all_accounts() -> dict[str, int]:
    """Queue one sync per enabled account, spread over the jitter window, each expiring if
    not started in time; skip accounts whose previous scheduled job is still queued or
    running (per-account Redis lock)."""
    rt = worker_runtime()
    jobs = rt.settings.jobs
    client = broker_redis()
    with rt.sessions() as session:
        accounts = session.execute(
            select(MailAccount.id, MailAccount.user_id)
            .where(MailAccount.sync_enabled.is_(True))
            .order_by(MailAccount.id)
        ).all()
    queued = skipped = 0
    for account_id, user_id in accounts:
        token = secrets.token_hex(12)
        if not fanout_lock.acquire(client, account_id, token, jobs.account_lock_ttl):
            skipped += 1
            continue
        try:
            job = rt.jobs.submit(
                KIND_SYNC,
                user_id=user_id,
                account_id=account_id,
                celery_only=True,
                countdown=random.uniform(0, jobs.sync_jitter) if jobs.sync_jitter else None,  # noqa: S311
                expires=jobs.sync_expires,
                lock_token=token,
            )
        except Exception:
            fanout_lock.release(client, account_id, token)
            raise
        if job.status == job_runs.PENDING:  # the reconciler sends it without the lock
            fanout_lock.release(client, account_id, token)
        queued += 1
    log.info("fan-out: %d syncs queued, %d accounts still busy", queued, skipped)
    return {"queued": queued, "skipped": skipped}


@celery_app.task(name=TASK_RECONCILE)
def reconcile_jobs() -> dict[str, int]:
    """Re-enqueue jobs left `pending` while the broker was unreachable."""
    return worker_runtime().jobs.reconcile_pending()


@signals.task_revoked.connect
def _expired(request: Any = None, expired: bool = False, **_kwargs: Any) -> None:
    """A scheduled job that was not started before its expiry: record it, free the lock."""
    if request is None or request.task not in (TASK_SYNC, TASK_RUN_JOB):
        return
    kwargs = request.kwargs or {}
    args = list(request.args or [])
    job_id = kwargs.get("job_id") if request.task == TASK_SYNC else (args or [None])[0]
    rt = worker_runtime()
    if job_id is not None:
        job = job_runs.get(rt.sessions, job_id)
        if job is not None and job.status not in job_runs.TERMINAL:
            job_runs.finish(
                rt.sessions,
                job,
                job_runs.EXPIRED if expired else job_runs.FAILED,
                "expired before a worker started it" if expired else "revoked",
            )
    token = kwargs.get("lock_token")
    if token and len(args) >= 2:
        fanout_lock.release(broker_redis(), int(args[1]), token)
