"""/health (200 or 503) and /metrics (Prometheus text).

/health checks the database and the key provider (HTTP 503 when either fails: the app
cannot serve), and, when jobs run on Celery, the broker (Redis PING) and the workers (Celery
ping, short timeout). Those two only degrade the status (HTTP 200, `"status": "degraded"`):
requests are still accepted (legacy fallback in phase 1, `pending` in phase 2/3), so a
broker outage must not take every web node out of a load balancer. The active phase and
the flags are in `jobs`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify

from mailhelper import metrics
from mailhelper.job_metrics import JobRunsCollector
from mailhelper.web.auth import runtime

bp = Blueprint("health", __name__)
WORKER_PING_TIMEOUT = 1.0


def _probe(fn: Callable[[], Any]) -> dict[str, Any]:
    try:
        detail = fn()
    except Exception as exc:
        return {"status": "fail", "error": type(exc).__name__}
    result: dict[str, Any] = {"status": "ok"}
    if detail:
        result.update(detail)
    return result


def _workers() -> dict[str, Any]:
    names = runtime().jobs.ping_workers(WORKER_PING_TIMEOUT)
    if not names:
        raise TimeoutError("no Celery worker answered")
    return {"workers": names}


def _recorded_phase() -> dict[str, Any] | None:
    """The latest recorded phase transition (the phase playbooks write them); not a check:
    when the database is down the database check already says so."""
    from mailhelper.phase_history import describe, latest

    try:
        with runtime().sessions() as session:
            row = latest(session)
            return describe(row) if row else None
    except Exception as exc:
        return {"error": type(exc).__name__}


@bp.route("/health")
def health() -> Any:
    rt = runtime()
    settings = rt.settings
    checks = {
        "database": _probe(rt.check_database),
        "key_provider": _probe(rt.keys.check),
    }
    critical_ok = all(c["status"] == "ok" for c in checks.values())
    if settings.redis_url and not settings.use_legacy_jobs:
        checks["redis"] = _probe(rt.jobs.check_broker)
        checks["workers"] = (
            _probe(_workers) if checks["redis"]["status"] == "ok" else {"status": "fail"}
        )
    all_ok = all(c["status"] == "ok" for c in checks.values())
    status = "ok" if all_ok else ("degraded" if critical_ok else "fail")
    body = {
        "status": status,
        "checks": checks,
        "key_provider": rt.keys.name,
        "jobs": {
            "phase": settings.job_phase,
            "backend": "legacy" if settings.use_legacy_jobs else "celery",
            "USE_LEGACY_JOBS": settings.use_legacy_jobs_flag,
            "LEGACY_FALLBACK": settings.legacy_fallback,
            "legacy_module_present": settings.legacy_module_present,
            "recorded_phase": _recorded_phase(),
        },
    }
    return jsonify(body), 200 if critical_ok else 503


@bp.route("/metrics")
def metrics_view() -> Response:
    data, content_type = metrics.render(JobRunsCollector(runtime().sessions))
    return Response(data, content_type=content_type)
