"""`mailhelper cutoff-report`: the figures the phase gates read from `job_runs`.

The window is the last N days before `now` by `enqueued_at`. Latencies are nearest-rank
percentiles in milliseconds over the jobs of the window that reached that point.
Schema: app/README.md, "Cutoff report".
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from mailhelper import job_runs, phase_history
from mailhelper.config import Settings
from mailhelper.models import JobRun

SCHEMA_VERSION = 1
NOW_ENV = "MAILHELPER_NOW"


def parse_now(value: str) -> dt.datetime:
    """ISO 8601; a time without zone is UTC."""
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _latency(values: list[float]) -> dict[str, Any]:
    values.sort()
    p50, p95 = percentile(values, 50), percentile(values, 95)
    return {
        "count": len(values),
        "p50": None if p50 is None else round(p50 * 1000, 3),
        "p95": None if p95 is None else round(p95 * 1000, 3),
    }


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else job_runs.aware(value).isoformat()


def _empty() -> dict[str, Any]:
    return {"statuses": defaultdict(int), "start": [], "finish": []}


def _summary(acc: dict[str, Any]) -> dict[str, Any]:
    statuses = {s: acc["statuses"].get(s, 0) for s in job_runs.STATUSES}
    done = statuses[job_runs.SUCCESS] + statuses[job_runs.FAILED]
    return {
        "total": sum(statuses.values()),
        "by_status": statuses,
        "finished": done,
        "success_rate": None if done == 0 else round(statuses[job_runs.SUCCESS] / done, 6),
        "latency_ms": {
            "enqueue_to_start": _latency(acc["start"]),
            "enqueue_to_finish": _latency(acc["finish"]),
        },
    }


def cutoff_report(session: Session, settings: Settings, *, days: float, now: dt.datetime) -> dict:
    start = now - dt.timedelta(days=days)
    per_backend: dict[str, dict[str, Any]] = {b: _empty() for b in job_runs.BACKENDS}
    overall = _empty()
    rows = session.execute(
        select(
            JobRun.backend, JobRun.status, JobRun.enqueued_at, JobRun.started_at, JobRun.finished_at
        )
        .where(JobRun.enqueued_at >= start, JobRun.enqueued_at <= now)
        .execution_options(yield_per=5000)
    )
    for backend, status, enqueued, started, finished in rows:
        for acc in (per_backend.setdefault(backend, _empty()), overall):
            acc["statuses"][status] += 1
            if started is not None:
                acc["start"].append(job_runs.seconds_between(enqueued, started))
            if finished is not None and status in job_runs.TERMINAL:
                acc["finish"].append(job_runs.seconds_between(enqueued, finished))
    backends = {name: _summary(acc) for name, acc in per_backend.items()}
    last_legacy = session.scalar(
        select(func.max(JobRun.enqueued_at)).where(
            or_(JobRun.backend == "legacy", JobRun.backend == "fallback"),
            JobRun.enqueued_at <= now,
        )
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "now": now.isoformat(),
        "window": {"days": days, "start": start.isoformat(), "end": now.isoformat()},
        "flags": {
            "USE_LEGACY_JOBS": settings.use_legacy_jobs_flag,
            "LEGACY_FALLBACK": settings.legacy_fallback,
            "effective_backend": "legacy" if settings.use_legacy_jobs else "celery",
            "legacy_module_present": settings.legacy_module_present,
            "phase": settings.job_phase,
        },
        "backends": backends,
        "total": _summary(overall),
        "legacy_jobs": backends["legacy"]["total"],
        "fallback_jobs": backends["fallback"]["total"],
        "last_legacy_job_at": _iso(last_legacy),
        "phase_history": phase_history.summary(session, now=now),
    }
