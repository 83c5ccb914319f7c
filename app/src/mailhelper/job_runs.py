"""State transitions of `job_runs` rows, shared by the dispatcher and every backend.

Each transition is one statement committed on its own (autocommit) and counts in
`mailhelper_jobs_total`; the first start and the final outcome also observe the
enqueue->start and enqueue->finish latencies.

Durability. Every transition is a durable commit, except two on PostgreSQL that sit on the
path from a request to a worker starting its job, where waiting for the WAL flush would
be most of the dispatcher's cost: the INSERT of a job that goes to Celery, and its
pending -> queued mark. Those commit asynchronously (`synchronous_commit = off`, on
connections of their own without a pre-ping): the row is committed and visible before the
message is published, and is flushed within a fraction of a second (or by the next durable
commit on the server, e.g. the worker's start). If PostgreSQL crashes in between:
- the message carries the job (task id `job.<kind>.<id>.<enqueued µs>.<random>`, see
  `message_task_id`): a worker that finds no row with that id and enqueue time re-creates
  it (`restore`) and runs the job; an id the server handed out again after the crash is
  not mistaken for it (the enqueue time differs);
- a lost `queued` mark leaves the row `pending`: the reconciler sends it once more (a sync
  is idempotent);
- a job that does not reach the broker (fallback to the legacy queue, or `pending` with
  the broker down) gets a durable UPDATE before the caller is answered.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import threading
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Connection, Engine, Table, bindparam, create_engine, func, select
from sqlalchemy.exc import DBAPIError
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
T = TypeVar("T")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
_TASK_ID = re.compile(r"^job\.([a-z_]+)\.(\d+)\.(\d+)\.[0-9a-f]+$")


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


_FAST_ENGINES: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()
_FAST_LOCK = threading.Lock()


def _fast_engine(engine: Engine) -> Engine | None:
    """PostgreSQL: a small pool beside `engine` whose sessions commit asynchronously, with
    no pre-ping (a stale connection is retried once instead). None on other databases."""
    if engine.dialect.name != "postgresql":
        return None
    with _FAST_LOCK:
        fast = _FAST_ENGINES.get(engine)
        if fast is None:
            fast = create_engine(
                engine.url,
                pool_size=2,
                max_overflow=8,
                pool_pre_ping=False,
                connect_args={"options": "-c synchronous_commit=off"},
            )
            _FAST_ENGINES[engine] = fast
        return fast


def dispose(engine: Engine, *, close: bool = True) -> None:
    """Drop the fast pool that belongs to `engine` (with the engine, or after a time limit
    interrupted a database call). `close=False` after a fork: the connections are the
    parent's, to be forgotten, not closed."""
    with _FAST_LOCK:
        fast = _FAST_ENGINES.pop(engine, None)
    if fast is not None:
        fast.dispose(close=close)


def _asynchronously(sessions: Sessions, fn: Callable[[Connection], T]) -> T:
    """`fn` on an asynchronously committing connection (PostgreSQL), else as any
    transition. A connection the server dropped (restart) is replaced once."""
    fast = _fast_engine(sessions.kw["bind"])
    if fast is None:
        with _statement(sessions) as conn:
            return fn(conn)
    try:
        with fast.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            return fn(conn)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    with fast.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return fn(conn)


def _checks_identity(sessions: Sessions) -> bool:
    """Only PostgreSQL commits rows asynchronously, so only there can an id be handed out
    again after a crash (SQLite also stores the times as naive text)."""
    return sessions.kw["bind"].dialect.name == "postgresql"


class MessageIdentity(NamedTuple):
    """What a Celery message says about the row it was sent for."""

    kind: str
    job_id: int
    enqueued_at: dt.datetime


def message_task_id(job: JobRun) -> str:
    """A Celery task id that names the job (unique per message: a resent job is a new
    task for Celery, whose revoked set is kept by task id)."""
    micros = (aware(job.enqueued_at) - _EPOCH) // _MICROSECOND
    return f"job.{job.kind}.{job.id}.{micros}.{secrets.token_hex(8)}"


def message_identity(task_id: str | None) -> MessageIdentity | None:
    match = _TASK_ID.match(task_id or "")
    if match is None:
        return None
    kind, job_id, micros = match.groups()
    return MessageIdentity(kind, int(job_id), _EPOCH + int(micros) * _MICROSECOND)


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
_START_SENT = _START.where(_T.c.enqueued_at == bindparam("sent_at"))
_RECORDED = select(_T.c.id).where(_BY_ID, _T.c.enqueued_at == bindparam("sent_at"))


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
    (one INSERT ... RETURNING in autocommit; asynchronously for backend `celery`, see the
    module's notes). `owner`: the process whose legacy queue will hold it."""
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
    if backend == "celery":
        job_id = _asynchronously(sessions, lambda c: c.execute(_INSERT, values).scalar_one())
    else:
        with _statement(sessions) as conn:
            job_id = conn.execute(_INSERT, values).scalar_one()
    metrics.JOBS.labels(backend, PENDING).inc()
    return JobRun(id=job_id, **values)


def restore(
    sessions: Sessions,
    lost: MessageIdentity,
    *,
    user_id: int | None = None,
    account_id: int | None = None,
) -> JobRun:
    """A row again for a Celery message whose row PostgreSQL lost in a crash (it was
    committed asynchronously): a new id, the original enqueue time, `queued` (durable)."""
    values: dict[str, Any] = {
        "kind": lost.kind,
        "backend": "celery",
        "status": QUEUED,
        "attempts": 0,
        "user_id": user_id,
        "account_id": account_id,
        "force": False,
        "enqueued_at": lost.enqueued_at,
        "owner": None,
    }
    with _statement(sessions) as conn:
        job_id = conn.execute(_INSERT, values).scalar_one()
    metrics.JOBS.labels("celery", QUEUED).inc()
    return JobRun(id=job_id, **values)


def handed_over(sessions: Sessions, job: JobRun, backend: str | None = None) -> None:
    """pending -> queued, only if no backend has started it meanwhile. Asynchronous for a
    Celery message (lost in a crash, the row is `pending` again: the reconciler resends)."""
    values: dict[str, object] = {"job_id": job.id, "status": QUEUED}
    if backend is not None:
        values["backend"] = backend
    if backend is None and job.backend == "celery":
        _asynchronously(sessions, lambda c: c.execute(_HANDED_OVER, values))
    else:
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


def start(sessions: Sessions, job_id: int, enqueued_at: dt.datetime | None = None) -> JobRun | None:
    """-> running, one more attempt. None when the job is unknown or already finished
    (a duplicate delivery: nothing to do). `enqueued_at` (from the message): only the row
    with that enqueue time (PostgreSQL)."""
    now = utcnow()
    params = {"job_id": job_id, "now": now}
    statement = _START
    if enqueued_at is not None and _checks_identity(sessions):
        statement, params["sent_at"] = _START_SENT, enqueued_at
    with _statement(sessions) as conn:
        row = conn.execute(statement, params).one_or_none()
    if row is None:
        return None
    job = JobRun(**row._asdict())
    metrics.JOBS.labels(job.backend, RUNNING).inc()
    if job.started_at is not None and aware(job.started_at) == now:  # the first start
        metrics.JOB_START_LATENCY.labels(job.backend).observe(seconds_between(job.enqueued_at, now))
    return job


def recorded(sessions: Sessions, job_id: int, enqueued_at: dt.datetime) -> bool:
    """Whether the row a message was sent for exists (see `restore`)."""
    if not _checks_identity(sessions):
        return get(sessions, job_id) is not None
    with _statement(sessions) as conn:
        found = conn.execute(_RECORDED, {"job_id": job_id, "sent_at": enqueued_at}).first()
    return found is not None


def stays_pending(sessions: Sessions, job: JobRun, reason: str) -> None:
    """The broker did not take the job: `pending` for the reconciler, with the reason, in
    a durable commit (which also flushes the row's asynchronous INSERT before the caller
    is told the job was accepted)."""
    with _statement(sessions) as conn:
        conn.execute(_UPDATE, {"job_id": job.id, "status": PENDING, "error": reason})
    job.error = reason


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


def get_sent(sessions: Sessions, job_id: int, task_id: str | None) -> JobRun | None:
    """The row a Celery message was sent for: None when its task id names another
    enqueue time (the id was handed out again after a crash; see the module's notes)."""
    job = get(sessions, job_id)
    sent = message_identity(task_id)
    if job is None or sent is None or sent.job_id != job_id or not _checks_identity(sessions):
        return job
    return job if aware(job.enqueued_at) == sent.enqueued_at else None


def get(sessions: Sessions, job_id: int) -> JobRun | None:
    with sessions() as session:
        return session.get(JobRun, job_id)
