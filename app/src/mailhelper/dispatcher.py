"""The job dispatcher: records every job in `job_runs` first, then hands it to the backend
the phase allows (`USE_LEGACY_JOBS`, `LEGACY_FALLBACK`).

- phase 0, USE_LEGACY_JOBS=true: the legacy in-process queue;
- phase 1, USE_LEGACY_JOBS=false and LEGACY_FALLBACK=true: Celery; the legacy queue
  (backend `fallback`, warning logged) when the broker is unreachable;
- phase 2, USE_LEGACY_JOBS=false and LEGACY_FALLBACK=false: Celery only; with the broker
  unreachable the job stays `pending` for the reconciler;
- phase 3, flag absent and legacy module deleted: Celery only, as phase 2.

A request is never lost: the row exists before any backend sees the job, and a row left
`pending` (broker down, process killed between the two steps) is re-enqueued by
`reconcile_pending` (beat task `mailhelper.reconcile_jobs`, CLI `mailhelper reconcile-jobs`).
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import kombu.exceptions
import redis.exceptions
from celery import Celery
from sqlalchemy import or_, select

from mailhelper import job_runs
from mailhelper.celery_app import TASK_RUN_JOB, TASK_SYNC, make_celery, redis_client
from mailhelper.config import LEGACY_MODULE
from mailhelper.errors import ConfigError, JobRejectedError, MailHelperError
from mailhelper.job_execution import KIND_SYNC, Outcome, run_job
from mailhelper.job_owner import current_owner
from mailhelper.models import JobRun, utcnow

if TYPE_CHECKING:
    from mailhelper.runtime import Runtime

log = logging.getLogger(__name__)

BROKER_ERRORS = (kombu.exceptions.OperationalError, redis.exceptions.RedisError, OSError)


class BrokerUnavailableError(MailHelperError):
    """The broker did not take the message (connection refused, timeout, auth)."""


class JobDispatcher:
    """One per runtime. Thread-safe; the Celery app and the legacy queue are built lazily."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.settings = runtime.settings
        self._celery: Celery | None = None
        self._legacy: Any = None
        self._lock = threading.Lock()

    # -- backends -------------------------------------------------------------------------

    @property
    def celery(self) -> Celery:
        with self._lock:
            if self._celery is None:
                self._celery = make_celery(self.settings)
            return self._celery

    def legacy_queue(self) -> Any:
        """The legacy queue of this process, loading `mailhelper.legacy_jobs` on first use."""
        with self._lock:
            if self._legacy is None:
                if not self.settings.legacy_module_present:
                    raise ConfigError("the legacy job queue (mailhelper/legacy_jobs.py) is removed")
                module = importlib.import_module(LEGACY_MODULE)
                jobs = self.settings.jobs
                self._legacy = module.LegacyJobQueue(
                    self._run_legacy,
                    maxsize=jobs.legacy_queue_size,
                    workers=jobs.legacy_workers,
                    retry_delays=jobs.legacy_retry_delays,
                    deprecated=self.settings.job_phase >= 2,
                    drain_timeout=jobs.legacy_drain_timeout,
                )
            return self._legacy

    def _run_legacy(self, job_id: int, can_retry: bool) -> bool:
        outcome, _job = run_job(self.rt, job_id, can_retry=can_retry)
        return outcome is Outcome.RETRY

    # -- submitting -----------------------------------------------------------------------

    def submit_sync(self, user_id: int, account_id: int, *, force: bool = False) -> JobRun:
        return self.submit(KIND_SYNC, user_id=user_id, account_id=account_id, force=force)

    def submit(
        self,
        kind: str,
        *,
        user_id: int | None = None,
        account_id: int | None = None,
        force: bool = False,
        celery_only: bool = False,
        countdown: float | None = None,
        expires: float | None = None,
        lock_token: str | None = None,
    ) -> JobRun:
        """Record the job (`pending`), then hand it over. JobRejectedError when the legacy
        queue is full (the row is then `failed`)."""
        legacy = self.settings.use_legacy_jobs and not celery_only
        job = job_runs.create(
            self.rt.sessions,
            kind,
            "legacy" if legacy else "celery",
            user_id=user_id,
            account_id=account_id,
            force=force,
            owner=current_owner() if legacy else None,
        )
        self._hand_over(
            job,
            legacy=legacy,
            fallback=self.settings.legacy_fallback and not celery_only,
            countdown=countdown,
            expires=expires,
            lock_token=lock_token,
        )
        return job

    def resubmit(self, job: JobRun) -> bool:
        """Hand a `pending` row over again (reconciler). False when it is still pending: the
        broker is down, or the legacy queue is full (the row is not failed for that: it was
        accepted long ago; the next run tries again)."""
        legacy = self.settings.use_legacy_jobs
        if legacy:
            job_runs.set_backend(self.rt.sessions, job, "legacy", owner=current_owner())
        try:
            self._hand_over(
                job, legacy=legacy, fallback=self.settings.legacy_fallback, fail_rejected=False
            )
        except JobRejectedError as exc:
            log.warning("job %s stays pending: %s", job.id, exc)
        return job.status != job_runs.PENDING

    def _hand_over(
        self,
        job: JobRun,
        *,
        legacy: bool,
        fallback: bool,
        countdown: float | None = None,
        expires: float | None = None,
        lock_token: str | None = None,
        fail_rejected: bool = True,
    ) -> None:
        if legacy:
            self._to_legacy(job, "legacy", fail_rejected=fail_rejected)
            return
        try:
            self.publish(job, countdown=countdown, expires=expires, lock_token=lock_token)
        except BrokerUnavailableError as exc:
            if fallback:
                log.warning(
                    "broker unreachable (%s): job %s runs on the legacy queue (fallback)",
                    exc,
                    job.id,
                )
                job_runs.set_backend(self.rt.sessions, job, "fallback", owner=current_owner())
                self._to_legacy(job, "fallback", fail_rejected=fail_rejected)
                return
            log.warning(
                "broker unreachable (%s): job %s stays pending until the reconciler re-enqueues it",
                exc,
                job.id,
            )
            job_runs.stays_pending(self.rt.sessions, job, f"broker unreachable: {exc}")
            return
        job_runs.handed_over(self.rt.sessions, job)

    def _to_legacy(self, job: JobRun, backend: str, *, fail_rejected: bool = True) -> None:
        """JobRejectedError when the queue is full; a new request's row is then `failed`."""
        try:
            self.legacy_queue().submit(job.id)
        except JobRejectedError as exc:
            if fail_rejected:
                job_runs.finish(self.rt.sessions, job, job_runs.FAILED, job_runs.error_text(exc))
            raise
        job_runs.handed_over(self.rt.sessions, job, backend)

    def publish(
        self,
        job: JobRun,
        *,
        countdown: float | None = None,
        expires: float | None = None,
        lock_token: str | None = None,
        retries: int = 0,
    ) -> None:
        """Send the Celery message of a recorded job; BrokerUnavailableError on failure.
        `retries`: the Celery retry count the message carries (a retry sent from outside
        the task, e.g. after a hard time limit)."""
        if job.kind == KIND_SYNC:
            name, args = TASK_SYNC, [job.user_id, job.account_id]
            kwargs: dict[str, Any] = {"job_id": job.id}
            if lock_token:
                kwargs["lock_token"] = lock_token
        else:
            name, args, kwargs = TASK_RUN_JOB, [job.id], {}
        try:
            self.celery.send_task(
                name,
                args=args,
                kwargs=kwargs,
                task_id=job_runs.message_task_id(job),
                countdown=countdown,
                expires=expires,
                queue=self.settings.jobs.queue,
                retries=retries,
                retry=True,
                retry_policy={
                    "max_retries": 1,
                    "interval_start": 0,
                    "interval_step": 0.2,
                    "interval_max": 0.2,
                },
            )
        except BROKER_ERRORS as exc:
            raise BrokerUnavailableError(f"{type(exc).__name__}: {exc}") from None

    # -- reconciling and health -----------------------------------------------------------

    def reconcile_pending(self, limit: int = 1000, also: Sequence[int] = ()) -> dict[str, int]:
        """Hand over `pending` rows older than the grace period (the dispatcher may still be
        between its two steps for younger ones), and the rows `also` names (orphans the
        reconciler just claimed). Stops at the first broker failure."""
        cutoff = utcnow() - dt.timedelta(seconds=self.settings.jobs.pending_grace)
        with self.rt.sessions() as session:
            rows = list(
                session.scalars(
                    select(JobRun)
                    .where(
                        JobRun.status == job_runs.PENDING,
                        or_(JobRun.enqueued_at <= cutoff, JobRun.id.in_(list(also))),
                    )
                    .order_by(JobRun.id)
                    .limit(limit)
                )
            )
        result = {"pending": len(rows), "requeued": 0, "still_pending": 0}
        for job in rows:
            if not self.resubmit(job):
                break  # the broker is still down: try again on the next run
            result["requeued"] += 1
        result["still_pending"] = len(rows) - result["requeued"]
        if result["requeued"]:
            log.info("reconciler: %d pending jobs handed over", result["requeued"])
        return result

    def check_broker(self) -> None:
        client = redis_client(self.settings)
        try:
            client.ping()
        finally:
            client.close()

    def ping_workers(self, timeout: float = 1.0) -> list[str]:
        """Name of a worker that answered a Celery ping (returns at the first reply, or
        empty after `timeout`)."""
        replies = self.celery.control.ping(timeout=timeout, limit=1)
        return sorted(name for reply in replies for name in reply)

    def close(self) -> None:
        with self._lock:
            legacy, celery = self._legacy, self._celery
            self._legacy = self._celery = None
        if legacy is not None:
            legacy.shutdown(self.settings.jobs.legacy_drain_timeout)
        if celery is not None:
            celery.close()
