"""Runs a sync request now, in the caller's process, and records it in `job_runs`.

The jobs issue replaces this with the legacy-queue/Celery dispatcher; the record it writes
has the same shape (backend `inline`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailhelper.errors import SyncError
from mailhelper.models import JobRun, utcnow
from mailhelper.sync import SyncResult

if TYPE_CHECKING:
    from mailhelper.runtime import Runtime

KIND_SYNC = "sync_user_emails"


def run_sync_inline(
    runtime: Runtime, user_id: int, account_id: int, *, force: bool = False
) -> tuple[JobRun, SyncResult | None, SyncError | None]:
    with runtime.sessions() as session:
        job = JobRun(
            kind=KIND_SYNC,
            backend="inline",
            status="queued",
            attempts=0,
            user_id=user_id,
            account_id=account_id,
            enqueued_at=utcnow(),
        )
        session.add(job)
        session.commit()
        job.status, job.attempts, job.started_at = "running", 1, utcnow()
        session.commit()
        result: SyncResult | None = None
        error: SyncError | None = None
        try:
            result = runtime.sync.sync_account(account_id, force=force)
            job.status = "success"
        except SyncError as exc:
            error = exc
            job.status = "failed"
            job.error = f"{type(exc).__name__}: {exc}"[:4000]
        job.finished_at = utcnow()
        session.commit()
        return job, result, error
