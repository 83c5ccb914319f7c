"""Prometheus metrics (multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set for gunicorn)."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector

SYNC_RUNS = Counter("mailhelper_sync_runs_total", "Account syncs by outcome", ["outcome"])
SYNC_MESSAGES = Counter("mailhelper_sync_messages_total", "Messages stored by the sync")
SYNC_FLAG_UPDATES = Counter("mailhelper_sync_flag_updates_total", "Flag changes applied")
SYNC_DELETIONS = Counter("mailhelper_sync_deletions_total", "Messages removed after expunge")
SYNC_SECONDS = Histogram(
    "mailhelper_sync_seconds",
    "Duration of one account sync",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
JOBS = Counter(
    "mailhelper_jobs_total",
    "Job state transitions in this process, by backend and the status entered",
    ["backend", "status"],
)
_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
JOB_START_LATENCY = Histogram(
    "mailhelper_job_enqueue_to_start_seconds",
    "From the dispatcher recording a job to its first start",
    ["backend"],
    buckets=_LATENCY_BUCKETS,
)
JOB_FINISH_LATENCY = Histogram(
    "mailhelper_job_enqueue_to_finish_seconds",
    "From the dispatcher recording a job to its final outcome",
    ["backend"],
    buckets=_LATENCY_BUCKETS,
)
HTTP_REQUESTS = Counter(
    "mailhelper_http_requests_total", "HTTP requests", ["method", "endpoint", "status"]
)


def render(extra: Collector | None = None) -> tuple[bytes, str]:
    """The metrics text and its content type (`extra`: a collector read at scrape time)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    text = generate_latest(registry)
    if extra is not None:
        one = CollectorRegistry()
        one.register(extra)
        text += generate_latest(one)
    return text, CONTENT_TYPE_LATEST
