"""Prometheus metrics (multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set for gunicorn)."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

SYNC_RUNS = Counter("mailhelper_sync_runs_total", "Account syncs by outcome", ["outcome"])
SYNC_MESSAGES = Counter("mailhelper_sync_messages_total", "Messages stored by the sync")
SYNC_FLAG_UPDATES = Counter("mailhelper_sync_flag_updates_total", "Flag changes applied")
SYNC_DELETIONS = Counter("mailhelper_sync_deletions_total", "Messages removed after expunge")
SYNC_SECONDS = Histogram(
    "mailhelper_sync_seconds",
    "Duration of one account sync",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
HTTP_REQUESTS = Counter(
    "mailhelper_http_requests_total", "HTTP requests", ["method", "endpoint", "status"]
)


def render() -> tuple[bytes, str]:
    """The metrics text and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
