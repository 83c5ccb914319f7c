"""Celery tasks: `sync_user_emails`, the beat-driven `sync_all_accounts` fan-out and the
`reconcile_jobs` reconciler. State lives in `job_runs`; Celery results are ignored.

Retries: transient errors (`TransientSyncError`, the soft time limit) are retried with
exponential backoff and jitter up to `MAILHELPER_JOB_MAX_RETRIES`; permanent errors fail at
once. A redelivered message (worker lost) runs the job again: the sync is idempotent. A job
killed at the hard time limit is retried the same way (counted by its attempts), from the
worker's main process, then fails with the error naming the limit.
"""

from __future__ import annotations

import collections
import logging
import random
import secrets
import threading
from typing import Any

from celery import Task, signals
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from sqlalchemy import select

from mailhelper import fanout_lock, job_reconciler, job_runs
from mailhelper.celery_app import (
    TASK_RECONCILE,
    TASK_RUN_JOB,
    TASK_SYNC,
    TASK_SYNC_ALL,
    broker_redis,
    celery_app,
    current_settings,
    worker_runtime,
)
from mailhelper.config import JobSettings
from mailhelper.dispatcher import BrokerUnavailableError
from mailhelper.errors import TransientSyncError
from mailhelper.job_execution import KIND_SYNC, Outcome, run_job
from mailhelper.models import MailAccount
from mailhelper.runtime import Runtime, build_runtime
from mailhelper.vault import WORKER_SECRETS

log = logging.getLogger(__name__)

TRANSIENT = (TransientSyncError, SoftTimeLimitExceeded)


def retry_delay(retries: int, jobs: JobSettings, rng: random.Random | None = None) -> float:
    """Exponential backoff (base * 2^retries, capped) with "equal jitter": a random delay
    between half and all of it, so retries of many accounts do not arrive together."""
    ceiling = min(jobs.retry_backoff_max, jobs.retry_backoff * (2**retries))
    return (rng or random).uniform(ceiling / 2, ceiling)


def _restore(
    task: Task,
    rt: Runtime,
    sent: job_runs.MessageIdentity,
    user_id: int | None,
    account_id: int | None,
) -> int:
    """The message's row was lost (PostgreSQL crashed before it flushed the asynchronous
    INSERT): record the job again and point this message (and its retries) at the new row."""
    job = job_runs.restore(rt.sessions, sent, user_id=user_id, account_id=account_id)
    log.warning(
        "job %s: its row was lost (database crash?); recorded again from its message as job %s",
        sent.job_id,
        job.id,
    )
    if task.name == TASK_RUN_JOB:
        task.request.args = [job.id]
    else:
        task.request.kwargs = {**(task.request.kwargs or {}), "job_id": job.id}
    return job.id


def _execute(
    task: Task,
    job_id: int,
    account_id: int | None = None,
    lock_token: str | None = None,
    user_id: int | None = None,
) -> str:
    rt = worker_runtime()
    jobs = rt.settings.jobs
    retries = task.request.retries
    can_retry = retries < jobs.max_retries
    sent = job_runs.message_identity(task.request.id)
    if sent is not None and sent.job_id != job_id:
        sent = None  # a message already pointed at a restored row
    outcome, _job = run_job(
        rt,
        job_id,
        can_retry=can_retry,
        transient=TRANSIENT,
        enqueued_at=sent.enqueued_at if sent else None,
    )
    if outcome is Outcome.LOST and sent is not None:
        job_id = _restore(task, rt, sent, user_id, account_id)
        outcome, _job = run_job(rt, job_id, can_retry=can_retry, transient=TRANSIENT)
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
    return _execute(self, job_id, account_id, lock_token, user_id)


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
    """Re-dispatch orphaned legacy jobs and jobs left `pending` (`mailhelper.job_reconciler`)."""
    return job_reconciler.reconcile(worker_runtime())


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
        job = job_runs.get_sent(rt.sessions, job_id, getattr(request, "id", None))
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


def _job_ref(task_name: str, args: Any, kwargs: Any) -> tuple[int | None, int | None, str | None]:
    """(job id, account id, fan-out lock token) of a sync_user_emails / run_job message."""
    args, kwargs = list(args or []), dict(kwargs or {})
    if task_name == TASK_RUN_JOB:
        return (args or [None])[0], None, None
    account_id = args[1] if len(args) >= 2 else kwargs.get("account_id")
    return kwargs.get("job_id"), account_id, kwargs.get("lock_token")


def after_hard_time_limit(
    rt: Runtime,
    job_id: int,
    *,
    account_id: int | None = None,
    lock_token: str | None = None,
    task_id: str | None = None,
) -> str:
    """The pool process running `job_id` was killed at the hard time limit and Celery acked
    the message: send a retry (backoff as for transient errors, counted by the attempts)
    while the policy allows one, else fail the job. `retry`, `pending` (the broker did not
    take the retry: the reconciler sends it), `failed` or `skipped` (finished, or already
    `retrying`: its retry is on its way).

    Celery reports the limit before the pool process is dead, and on a busy host the process
    may not have marked the row `running` yet: a `pending`/`queued` row counts too (its
    late start cannot undo a failure, and is overtaken by the retry)."""
    jobs = rt.settings.jobs
    job = job_runs.get_sent(rt.sessions, job_id, task_id)
    if job is None or job.status in (*job_runs.TERMINAL, job_runs.RETRYING):
        return "skipped"
    error = (
        f"TimeLimitExceeded: hard time limit ({jobs.time_limit:g} s) exceeded, "
        "the pool process was killed"
    )
    retries = max(0, job.attempts - 1)
    if retries >= jobs.max_retries:
        job_runs.finish(rt.sessions, job, job_runs.FAILED, error)
        if lock_token and account_id is not None:
            fanout_lock.release(broker_redis(), account_id, lock_token)
        return "failed"
    job_runs.retrying(rt.sessions, job, error)
    try:
        rt.jobs.publish(
            job,
            countdown=retry_delay(retries, jobs),
            lock_token=lock_token,
            retries=retries + 1,
        )
    except BrokerUnavailableError as exc:
        job_runs.back_to_pending(rt.sessions, job, f"{error}; retry not sent: {exc}")
        return "pending"
    if lock_token and account_id is not None:
        fanout_lock.extend(broker_redis(), account_id, lock_token, jobs.account_lock_ttl)
    return "retry"


class _SeenOnce:
    """The last `size` keys seen, to act once per key."""

    def __init__(self, size: int = 1000) -> None:
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def first(self, key: str) -> bool:
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
            return True


_HARD_LIMITED = _SeenOnce()


@signals.task_failure.connect
def _hard_time_limit(
    sender: Task | None = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    args: Any = None,
    kwargs: Any = None,
    **_kwargs: Any,
) -> None:
    """Celery reports a hard time limit in the worker's main process (the pool process is
    killed): without this the row would stay `running` for ever. Celery sends this signal
    twice for one hard limit (from the failure and the timeout handler): once per task id."""
    name = getattr(sender, "name", None)
    if not isinstance(exception, TimeLimitExceeded) or name not in (TASK_SYNC, TASK_RUN_JOB):
        return
    if not _HARD_LIMITED.first(str(task_id)):
        return
    job_id, account_id, lock_token = _job_ref(name, args, kwargs)
    if job_id is None:
        log.error("hard time limit: a %s message without job id; nothing recorded", name)
        return
    # a runtime of its own: the main process forks pool processes and must not hold
    # connections they would inherit. The worker's secrets only (its AppRole may not read
    # the Flask key), and no waiting for a sealed Vault: the main process must not stall.
    rt = build_runtime(current_settings(), secrets=WORKER_SECRETS, vault_wait=False)
    try:
        outcome = after_hard_time_limit(
            rt, job_id, account_id=account_id, lock_token=lock_token, task_id=task_id
        )
    finally:
        rt.close()
    log.warning("job %s killed at the hard time limit: %s", job_id, outcome)
