"""State transitions of `job_runs` rows, shared by the dispatcher and every backend.

Each transition is one statement committed on its own (autocommit, durable) and counts in
`mailhelper_jobs_total`; the first start and the final outcome also observe the
enqueue->start and enqueue->finish latencies.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, Table, bindparam, func
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


def _statement(sessions: Sessions) -> Connection:
    """A connection on which every statement commits on its own (autocommit): one round
    trip instead of BEGIN, statement, COMMIT (three, plus the ORM's work), and as durable
    as any commit. Each transition below is one such statement, prepared once on the
    table (Core): the ORM's per-call statement building cost more than the round trip."""
    engine = sessions.kw["bind"]
    return engine.connect().execution_options(isolation_level="AUTOCOMMIT")


_T: Table = JobRun.__table__  # type: ignore[assignment]
_BY_ID = _T.c.id == bindparam("job_id")
_INSERT = _T.insert().returning(_T.c.id)
_HANDED_OVER = _T.update().where(_BY_ID, _T.c.status == PENDING)
_UPDATE = _T.update().where(_BY_ID)
_START = (
    _T.update()
    .where(_BY_ID, _T.c.status.not_in(TERMINAL))
    .values(
        status=RUNNING,
        attempts=_T.c.attempts + 1,
        started_at=func.coalesce(_T.c.started_at, bindparam("now", type_=_T.c.started_at.type)),
    )
    .returning(*_T.c)
)


def create(
    sessions: Sessions,
    kind: str,
    backend: str,
    *,
    user_id: int | None = None,
    account_id: int | None = None,
    force: bool = False,
    owner: str | None = None,
) -> JobRun:
    """The row every job starts with: `pending`, committed before any backend has seen it
    (one INSERT ... RETURNING in autocommit). `owner`: the process whose legacy queue will
    hold it."""
    values: dict[str, Any] = {
        "kind": kind,
        "backend": backend,
        "status": PENDING,
        "attempts": 0,
        "user_id": user_id,
        "account_id": account_id,
        "force": force,
        "enqueued_at": utcnow(),
        "owner": owner,
    }
    with _statement(sessions) as conn:
        job_id = conn.execute(_INSERT, values).scalar_one()
    metrics.JOBS.labels(backend, PENDING).inc()
    return JobRun(id=job_id, **values)


def handed_over(sessions: Sessions, job: JobRun, backend: str | None = None) -> None:
    """pending -> queued, only if no backend has started it meanwhile."""
    values: dict[str, object] = {"job_id": job.id, "status": QUEUED}
    if backend is not None:
        values["backend"] = backend
    with _statement(sessions) as conn:
        conn.execute(_HANDED_OVER, values)
    job.backend = backend or job.backend
    if job.status == PENDING:
        job.status = QUEUED
    metrics.JOBS.labels(job.backend, QUEUED).inc()


def set_backend(sessions: Sessions, job: JobRun, backend: str, *, owner: str | None = None) -> None:
    """The backend the job goes to now, and (legacy queue) the process that holds it."""
    with _statement(sessions) as conn:
        conn.execute(_UPDATE, {"job_id": job.id, "backend": backend, "owner": owner})
    job.backend, job.owner = backend, owner


def start(sessions: Sessions, job_id: int) -> JobRun | None:
    """-> running, one more attempt. None when the job is unknown or already finished
    (a duplicate delivery: nothing to do)."""
    now = utcnow()
    with _statement(sessions) as conn:
        row = conn.execute(_START, {"job_id": job_id, "now": now}).one_or_none()
    if row is None:
        return None
    job = JobRun(**row._asdict())
    metrics.JOBS.labels(job.backend, RUNNING).inc()
    if job.started_at is not None and aware(job.started_at) == now:  # the first start
        metrics.JOB_START_LATENCY.labels(job.backend).observe(seconds_between(job.enqueued_at, now))
    return job


def back_to_pending(sessions: Sessions, job: JobRun, error: str) -> None:
    """No message exists for the job any more (a retry the broker did not take): `pending`
    again, so the reconciler sends it."""
    with _statement(sessions) as conn:
        conn.execute(_UPDATE, {"job_id": job.id, "status": PENDING, "error": error})
    job.status = PENDING
    metrics.JOBS.labels(job.backend, PENDING).inc()


def retrying(sessions: Sessions, job: JobRun, exc: BaseException | str) -> None:
    """A transient error; another attempt is scheduled."""
    error = exc if isinstance(exc, str) else error_text(exc)
    with _statement(sessions) as conn:
        conn.execute(_UPDATE, {"job_id": job.id, "status": RETRYING, "error": error})
    job.status = RETRYING
    metrics.JOBS.labels(job.backend, RETRYING).inc()


def finish(sessions: Sessions, job: JobRun, status: str, error: str | None = None) -> None:
    """-> success, failed or expired (terminal)."""
    now = utcnow()
    with _statement(sessions) as conn:
        conn.execute(
            _UPDATE, {"job_id": job.id, "status": status, "error": error, "finished_at": now}
        )
    job.status, job.error, job.finished_at = status, error, now
    metrics.JOBS.labels(job.backend, status).inc()
    metrics.JOB_FINISH_LATENCY.labels(job.backend).observe(seconds_between(job.enqueued_at, now))


def get(sessions: Sessions, job_id: int) -> JobRun | None:
    with sessions() as session:
        return session.get(JobRun, job_id)
