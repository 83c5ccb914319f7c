"""The legacy in-process job queue (upstream KI-Mail-Helper's `14_background_jobs.py`).

A bounded queue served by a few daemon threads in the web process, with fixed retry delays
for transient errors. Phase 0 runs every job here, phase 1 only when the broker is down
(backend `fallback`); phase 2 leaves it unused and every use logs a deprecation warning;
phase 3 deletes this file.

Nothing imports this module at import time: `mailhelper.dispatcher` loads it by name, and
only when the configuration allows legacy jobs. Keep it self-contained (no other module may
depend on anything defined here).
"""

from __future__ import annotations

import atexit
import heapq
import itertools
import logging
import queue
import threading
import time
import warnings
from collections.abc import Callable, Sequence

from mailhelper.errors import JobRejectedError

log = logging.getLogger(__name__)

# run(job_id, can_retry) -> True when the job asks to be retried later
Runner = Callable[[int, bool], bool]

DEPRECATION = (
    "the legacy in-process job queue is deprecated (phase 2) and will be removed in phase 3; "
    "jobs should run on Celery"
)


class LegacyJobQueue:
    """Bounded FIFO + worker threads + a timer thread for delayed retries."""

    def __init__(
        self,
        run: Runner,
        *,
        maxsize: int = 100,
        workers: int = 2,
        retry_delays: Sequence[float] = (30.0, 120.0, 600.0),
        deprecated: bool = False,
        drain_timeout: float = 30.0,
    ) -> None:
        self._run = run
        self._queue: queue.Queue[tuple[int, int] | None] = queue.Queue(maxsize=maxsize)
        self._delays = tuple(retry_delays)
        self._deprecated = deprecated
        self._later: list[tuple[float, int, int, int]] = []  # (due, seq, job_id, attempt)
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closing = False
        self._warn("created")
        self._threads = [
            threading.Thread(target=self._work, name=f"legacy-job-{i}", daemon=True)
            for i in range(workers)
        ]
        self._timer = threading.Thread(target=self._wake_retries, name="legacy-job-retries")
        self._timer.daemon = True
        for t in [*self._threads, self._timer]:
            t.start()
        atexit.register(self.shutdown, drain_timeout)

    def _warn(self, what: str) -> None:
        if self._deprecated:
            log.warning("DEPRECATED (%s): %s", what, DEPRECATION)
            warnings.warn(DEPRECATION, DeprecationWarning, stacklevel=3)

    def submit(self, job_id: int) -> None:
        """Queue a recorded job; JobRejectedError when the queue is full or closing."""
        self._warn(f"job {job_id} submitted")
        if self._closing:
            raise JobRejectedError("the legacy job queue is shutting down")
        try:
            self._queue.put_nowait((job_id, 1))
        except queue.Full:
            raise JobRejectedError(
                f"the legacy job queue is full ({self._queue.maxsize} jobs waiting)"
            ) from None

    def size(self) -> int:
        """Jobs waiting now or for a retry."""
        with self._cond:
            return self._queue.qsize() + len(self._later)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                job_id, attempt = item
                try:
                    retry = self._run(job_id, attempt <= len(self._delays))
                except Exception:
                    log.exception("legacy job %s crashed", job_id)
                    retry = False
                if retry:
                    self._schedule(job_id, attempt)
            finally:
                self._queue.task_done()

    def _schedule(self, job_id: int, attempt: int) -> None:
        delay = self._delays[attempt - 1]
        log.info("legacy job %s: retry %d in %.1f s", job_id, attempt, delay)
        with self._cond:
            heapq.heappush(
                self._later, (time.monotonic() + delay, next(self._seq), job_id, attempt + 1)
            )
            self._cond.notify()

    def _wake_retries(self) -> None:
        with self._cond:
            while not self._closing:
                now = time.monotonic()
                while self._later and self._later[0][0] <= now:
                    _, _, job_id, attempt = self._later[0]
                    try:
                        self._queue.put_nowait((job_id, attempt))
                    except queue.Full:
                        break  # try again shortly; the retry stays scheduled
                    heapq.heappop(self._later)
                wait = self._later[0][0] - now if self._later else None
                self._cond.wait(timeout=0.2 if wait is None or wait <= 0 else min(wait, 1.0))

    def shutdown(self, timeout: float = 30.0) -> bool:
        """Stop taking jobs and drain the queue (in-flight and queued jobs finish, pending
        retries are dropped: their rows stay `retrying`). True when drained in time."""
        if self._closing:
            return True
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closing = True
            dropped = len(self._later)
            self._later.clear()
            self._cond.notify_all()
        if dropped:
            log.warning("legacy job queue: %d scheduled retries dropped at shutdown", dropped)
        for _ in self._threads:
            while True:
                try:
                    self._queue.put(None, timeout=max(0.01, deadline - time.monotonic()))
                    break
                except queue.Full:
                    if time.monotonic() >= deadline:
                        break
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        drained = not any(t.is_alive() for t in self._threads)
        if not drained:
            log.warning("legacy job queue: not drained within %.0f s", timeout)
        return drained
