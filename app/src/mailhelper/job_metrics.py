"""Job figures read from `job_runs` at scrape time, so /metrics of the web app also shows
what the Celery workers (other processes, other hosts) did."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mailhelper.models import JobRun, utcnow

WINDOW = dt.timedelta(hours=24)


class JobRunsCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "mailhelper_job_runs",
            "Jobs recorded in the last 24 hours by backend and current status (all processes)",
            labels=["backend", "status"],
        )
        with self.sessions() as session:
            rows = session.execute(
                select(JobRun.backend, JobRun.status, func.count())
                .where(JobRun.enqueued_at >= utcnow() - WINDOW)
                .group_by(JobRun.backend, JobRun.status)
            ).all()
        for backend, status, count in rows:
            gauge.add_metric([backend, status], count)
        yield gauge
