"""State transitions of `job_runs` rows, shared by the dispatcher and every backend.

Each transition is one short transaction and counts in `mailhelper_jobs_total`; the first
start and the final outcome also observe the enqueue->start and enqueue->finish latencies.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import text, update
from sqlalchemy.orm import Session, sessionmaker

from mailhelper import metrics
from mailhelper.models import JobRun, utcnow

PENDING, QUEUED, RUNNING, RETRYING = "pending", "queued", "running", "retrying"
SUCCESS, FAILED, EXPIRED = "success", "failed", "expired"
TERMINAL = (SUCCESS, FAILED, EXPIRED)
STATUSES = (PENDING, QUEUED, RUNNING, RETRYING, SUCCESS, FAILED, EXPIRED)
BACKENDS = ("legacy", "celery", "fallback")
_ERROR_LIMIT = 4000

Sessions = sessionmaker[Session]


def aware(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def seconds_between(start: dt.datetime, end: dt.datetime) -> float:
    return max(0.0, (aware(end) - aware(start)).total_seconds())


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:_ERROR_LIMIT]


def _relaxed(session: Session) -> None:
    """No WAL flush wait for this transaction (PostgreSQL). Only for transitions whose loss
    in a database crash is harmless: a row left `pending` is sent again by the reconciler
    (a duplicate delivery is skipped or re-syncs idempotently), a lost `running` is
    overwritten by the final, durable transition. The row's creation and its final state
    are always durable."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit TO OFF"))


def create(
    sessions: Sessions,
    kind: str,
    backend: str,
    *,
    user_id: int | None = None,
    account_id: int | None = None,
    force: bool = False,
) -> JobRun:
    """The row every job starts with: `pending`, before any backend has seen it."""
    with sessions() as session:
        job = JobRun(
            kind=kind,
            backend=backend,
            status=PENDING,
            attempts=0,
            user_id=user_id,
            account_id=account_id,
            force=force,
            enqueued_at=utcnow(),
        )
        session.add(job)
        session.commit()
    metrics.JOBS.labels(backend, PENDING).inc()
    return job


def handed_over(sessions: Sessions, job: JobRun, backend: str | None = None) -> None:
    """pending -> queued, only if no backend has started it meanwhile."""
    values: dict[str, object] = {"status": QUEUED}
    if backend is not None:
        values["backend"] = backend
    with sessions() as session:
        _relaxed(session)
        session.execute(
            update(JobRun).where(JobRun.id == job.id, JobRun.status == PENDING).values(**values)
        )
        session.commit()
    job.backend = backend or job.backend
    if job.status == PENDING:
        job.status = QUEUED
    metrics.JOBS.labels(job.backend, QUEUED).inc()


def set_backend(sessions: Sessions, job: JobRun, backend: str) -> None:
    with sessions() as session:
        session.execute(update(JobRun).where(JobRun.id == job.id).values(backend=backend))
        session.commit()
    job.backend = backend


def start(sessions: Sessions, job_id: int) -> JobRun | None:
    """-> running, one more attempt. None when the job is unknown or already finished
    (a duplicate delivery: nothing to do)."""
    now = utcnow()
    with sessions() as session:
        _relaxed(session)
        job = session.get(JobRun, job_id, with_for_update=True)
        if job is None or job.status in TERMINAL:
            session.rollback()
            return None
        first = job.started_at is None
        job.status = RUNNING
        job.attempts += 1
        if first:
            job.started_at = now
        session.commit()
    metrics.JOBS.labels(job.backend, RUNNING).inc()
    if first:
        metrics.JOB_START_LATENCY.labels(job.backend).observe(seconds_between(job.enqueued_at, now))
    return job


def retrying(sessions: Sessions, job: JobRun, exc: BaseException) -> None:
    """A transient error; another attempt is scheduled."""
    with sessions() as session:
        session.execute(
            update(JobRun).where(JobRun.id == job.id).values(status=RETRYING, error=error_text(exc))
        )
        session.commit()
    job.status = RETRYING
    metrics.JOBS.labels(job.backend, RETRYING).inc()


def finish(sessions: Sessions, job: JobRun, status: str, error: str | None = None) -> None:
    """-> success, failed or expired (terminal)."""
    now = utcnow()
    with sessions() as session:
        session.execute(
            update(JobRun)
            .where(JobRun.id == job.id)
            .values(status=status, error=error, finished_at=now)
        )
        session.commit()
    job.status, job.error, job.finished_at = status, error, now
    metrics.JOBS.labels(job.backend, status).inc()
    metrics.JOB_FINISH_LATENCY.labels(job.backend).observe(seconds_between(job.enqueued_at, now))


def get(sessions: Sessions, job_id: int) -> JobRun | None:
    with sessions() as session:
        return session.get(JobRun, job_id)
