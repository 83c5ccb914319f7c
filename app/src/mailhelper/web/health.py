"""/health (database and key provider; 200 or 503) and /metrics (Prometheus text)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from mailhelper import metrics
from mailhelper.web.auth import runtime

bp = Blueprint("health", __name__)


@bp.route("/health")
def health() -> Any:
    rt = runtime()
    checks: dict[str, dict[str, str]] = {}
    for name, probe in (("database", rt.check_database), ("key_provider", rt.keys.check)):
        try:
            probe()
            checks[name] = {"status": "ok"}
        except Exception as exc:
            checks[name] = {"status": "fail", "error": type(exc).__name__}
    ok = all(c["status"] == "ok" for c in checks.values())
    body = {"status": "ok" if ok else "fail", "checks": checks, "key_provider": rt.keys.name}
    return jsonify(body), 200 if ok else 503


@bp.route("/metrics")
def metrics_view() -> Response:
    data, content_type = metrics.render()
    return Response(data, content_type=content_type)
