"""The reconciler (beat task `mailhelper.reconcile_jobs`, CLI `mailhelper reconcile-jobs`):
nothing accepted is lost.

1. Orphaned legacy jobs: a row `queued`, `running` or `retrying` on the in-process queue
   (backend legacy or fallback) of a process that no longer exists. On the owner's host
   the check is exact (`mailhelper.job_owner`); an owner on another host, or a row without
   owner, counts as orphaned once it was enqueued longer ago than
   `MAILHELPER_LEGACY_ORPHAN_TIMEOUT`. Each orphan is claimed with a conditional update
   (back to `pending`, owner cleared; two reconcilers never take the same row) and
   dispatched again through the backend the current flags allow. The row keeps the backend
   it was accepted on unless it runs on the legacy queue again (so the phase gates still see
   that the legacy queue was used).
2. `pending` rows older than the grace period (broker down, process killed between the
   dispatcher's two steps): handed over again (`JobDispatcher.reconcile_pending`).

The module does not need `mailhelper.legacy_jobs`: after the cutoff it still re-dispatches
leftover legacy rows, to Celery.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from mailhelper import job_runs
from mailhelper.job_owner import owner_alive
from mailhelper.models import JobRun, utcnow

if TYPE_CHECKING:
    from mailhelper.runtime import Runtime

log = logging.getLogger(__name__)

ACTIVE = (job_runs.QUEUED, job_runs.RUNNING, job_runs.RETRYING)
IN_PROCESS = ("legacy", "fallback")


def is_orphaned(job: JobRun, now: dt.datetime, timeout: float) -> bool:
    alive = owner_alive(job.owner) if job.owner else None
    if alive is not None:
        return not alive
    return job_runs.seconds_between(job.enqueued_at, now) >= timeout


def find_orphans(rt: Runtime, limit: int = 1000) -> list[JobRun]:
    """Legacy/fallback rows still active whose owner is gone (see the module docstring)."""
    now = utcnow()
    with rt.sessions() as session:
        rows = session.scalars(
            select(JobRun)
            .where(JobRun.backend.in_(IN_PROCESS), JobRun.status.in_(ACTIVE))
            .order_by(JobRun.id)
            .limit(limit)
        ).all()
    return [j for j in rows if is_orphaned(j, now, rt.settings.jobs.legacy_orphan_timeout)]


def claim(rt: Runtime, job: JobRun) -> bool:
    """Orphan -> pending, unless somebody changed the row since it was read."""
    with rt.sessions() as session:
        claimed = session.execute(
            update(JobRun)
            .where(
                JobRun.id == job.id,
                JobRun.status == job.status,
                JobRun.owner.is_(None) if job.owner is None else JobRun.owner == job.owner,
            )
            .values(status=job_runs.PENDING, owner=None)
        ).rowcount
        session.commit()
    if claimed:
        log.warning(
            "job %s was %s on the legacy queue of %s, which is gone: dispatching it again",
            job.id,
            job.status,
            job.owner or "an unknown process",
        )
        job.status, job.owner = job_runs.PENDING, None
    return bool(claimed)


def reconcile(rt: Runtime, limit: int = 1000) -> dict[str, int]:
    """Claim orphaned legacy jobs, then hand over every pending row old enough and the
    claimed ones. Counts: `orphaned` (claimed now), `pending` (handed over or tried),
    `requeued`, `still_pending` (the broker did not take them: the next run tries again)."""
    claimed = [job.id for job in find_orphans(rt, limit) if claim(rt, job)]
    return {"orphaned": len(claimed), **rt.jobs.reconcile_pending(limit, also=claimed)}
