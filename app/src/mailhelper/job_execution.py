"""Runs one recorded job, whatever the backend: start, handler, outcome in `job_runs`.

Transient errors (`TransientSyncError` and whatever the backend adds, e.g. Celery's soft
time limit) ask for a retry while the backend still allows one; permanent errors and
everything unexpected fail the job at once, with the error stored in the row.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from mailhelper import job_runs
from mailhelper.errors import NotFoundError, PermanentSyncError, SyncError, TransientSyncError
from mailhelper.models import JobRun

if TYPE_CHECKING:
    from mailhelper.runtime import Runtime

log = logging.getLogger(__name__)

KIND_SYNC = "sync_user_emails"
KIND_NOOP = "noop"


class Outcome(enum.Enum):
    SUCCESS = "success"
    RETRY = "retry"
    FAILED = "failed"
    SKIPPED = "skipped"  # unknown or already finished: a duplicate delivery
    LOST = "lost"  # the message's row is gone (PostgreSQL crash): see job_runs.restore


def _sync(rt: Runtime, job: JobRun) -> None:
    if job.account_id is None:
        raise NotFoundError("the account of this job was deleted")
    rt.sync.sync_account(job.account_id, force=job.force)


def _noop(_rt: Runtime, _job: JobRun) -> None:
    """Does nothing: measures the jobs layer itself (app/bench/bench_jobs.py)."""


HANDLERS: dict[str, Callable[[Runtime, JobRun], None]] = {KIND_SYNC: _sync, KIND_NOOP: _noop}


def _caused_by(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """Whether `exc` or an exception it was raised from/while handling is one of `kinds`
    (a soft time limit that interrupts a database call surfaces as the driver's error)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kinds):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def run_job(
    rt: Runtime,
    job_id: int,
    *,
    can_retry: bool,
    transient: tuple[type[BaseException], ...] = (TransientSyncError,),
    enqueued_at: dt.datetime | None = None,
) -> tuple[Outcome, JobRun | None]:
    """`enqueued_at`: the enqueue time the message carries; a row with this id but another
    enqueue time is not this job, and no such row at all is Outcome.LOST."""
    job = job_runs.start(rt.sessions, job_id, enqueued_at)
    if job is None:
        if enqueued_at is not None and not job_runs.recorded(rt.sessions, job_id, enqueued_at):
            return Outcome.LOST, None
        log.info("job %s is unknown or already finished; skipped", job_id)
        return Outcome.SKIPPED, None
    handler = HANDLERS.get(job.kind)
    try:
        if handler is None:
            raise NotFoundError(f"unknown job kind {job.kind!r}")
        handler(rt, job)
    except transient as exc:
        if not isinstance(exc, SyncError):
            # a time limit interrupts whatever runs, possibly a database call: the pooled
            # connections may be mid-protocol, so drop them before the row is updated
            rt.dispose_connections()
        if can_retry:
            job_runs.retrying(rt.sessions, job, exc)
            return Outcome.RETRY, job
        job_runs.finish(rt.sessions, job, job_runs.FAILED, job_runs.error_text(exc))
        return Outcome.FAILED, job
    except (PermanentSyncError, NotFoundError) as exc:
        job_runs.finish(rt.sessions, job, job_runs.FAILED, job_runs.error_text(exc))
        return Outcome.FAILED, job
    except Exception as exc:
        if _caused_by(exc, transient):
            rt.dispose_connections()  # as above: interrupted in the middle of a database call
            log.warning("job %s interrupted (%s); treated as transient", job.id, exc)
            if can_retry:
                job_runs.retrying(rt.sessions, job, exc)
                return Outcome.RETRY, job
            job_runs.finish(rt.sessions, job, job_runs.FAILED, job_runs.error_text(exc))
            return Outcome.FAILED, job
        log.exception("job %s (%s) failed unexpectedly", job.id, job.kind)
        job_runs.finish(rt.sessions, job, job_runs.FAILED, job_runs.error_text(exc))
        return Outcome.FAILED, job
    job_runs.finish(rt.sessions, job, job_runs.SUCCESS)
    return Outcome.SUCCESS, job
