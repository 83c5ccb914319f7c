#!/usr/bin/env python3
"""Jobs benchmark (not a test): enqueue->start latency of no-op jobs through the dispatcher
(`job_runs` row first, then Celery) beside a bare `task.delay()`, on the same worker.

Starts private PostgreSQL and Redis (production ACL, AOF) with the test fixtures' code and
one `mailhelper worker` (prefork, concurrency 1). Latency is measured open-loop at a fixed
rate below the worker's capacity, dispatcher and plain jobs alternating (same worker, same
noise); throughput with a burst of N jobs of each kind.

    .venv-app/bin/python app/bench/bench_jobs.py [--jobs 1000] [--rate 16] [--json]

Dispatcher latency = job_runs.started_at - job_runs.enqueued_at (taken before the row's
INSERT, so the INSERT is inside the measured span); plain latency = the task's start time -
the time before `delay()`. Both ends are wall-clock times of the same host, taken at the
same points (before the caller's first step, at the start of the task body). The
dispatcher's caller-side steps are timed too (`dispatcher_steps`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

APP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(APP))

from mailhelper import db, job_runs  # noqa: E402
from mailhelper.celery_app import configure  # noqa: E402
from mailhelper.config import load_settings  # noqa: E402
from mailhelper.cutoff import percentile  # noqa: E402
from mailhelper.job_execution import KIND_NOOP  # noqa: E402
from mailhelper.job_runs import seconds_between  # noqa: E402
from mailhelper.models import JobRun  # noqa: E402
from mailhelper.runtime import build_runtime  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from tests.jobsenv import Worker  # noqa: E402
from tests.servers import PostgresServer, RedisServer  # noqa: E402
from tests.worker_tasks import PLAIN_LATENCY_KEY, plain_noop  # noqa: E402


def stats(values: list[float]) -> dict[str, float | int | None]:
    values = sorted(values)
    ms = [v * 1000 for v in values]
    return {
        "count": len(ms),
        "p50_ms": round(percentile(ms, 50) or 0, 2),
        "p95_ms": round(percentile(ms, 95) or 0, 2),
        "max_ms": round(ms[-1], 2) if ms else None,
    }


class Spans:
    """Times the dispatcher's steps in this process (the profile of its extra cost): the
    row's INSERT (committed before publishing), the publish, the pending->queued UPDATE."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.on = False

    def wrap(self, owner: object, name: str, label: str) -> None:
        inner = getattr(owner, name)

        def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                if self.on:
                    self.times.setdefault(label, []).append(time.perf_counter() - t0)

        setattr(owner, name, timed)

    def report(self) -> dict[str, dict[str, float | int | None]]:
        return {label: stats(values) for label, values in self.times.items()}


def paced(n: int, rate: float, fn) -> None:  # noqa: ANN001
    interval = 1.0 / rate
    start = time.monotonic()
    for i in range(n):
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        fn()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=16.0, help="jobs/s of the latency run")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--no-fsync", action="store_true", help="PostgreSQL with fsync off")
    ap.add_argument(
        "--max-tasks-per-child",
        type=int,
        default=1000,
        help="worker pool recycling (1000: the production default; a number above the jobs "
        "sent, e.g. 100000, for no recycling during the run)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    pg = PostgresServer(durable=not args.no_fsync).start()
    redis = RedisServer().start()
    tmp = Path(tempfile.mkdtemp(prefix="mh-bench-jobs-"))
    worker = None
    rt = None
    try:
        url = pg.create_database("bench")
        db.upgrade(url)
        env = {
            "HOME": str(tmp),
            "MAILHELPER_DATA_DIR": str(tmp / "data"),
            "DATABASE_URL": url,
            "REDIS_URL": redis.url(0),
            "USE_LEGACY_JOBS": "false",
            "LEGACY_FALLBACK": "false",
            "MAILHELPER_CELERY_QUEUE": "bench",
        }
        settings = load_settings(env)
        rt = build_runtime(settings)
        configure(settings)  # the module app, for the plain delay()
        spans = Spans()
        spans.wrap(job_runs, "create", "insert_row")
        spans.wrap(rt.jobs, "publish", "publish")
        spans.wrap(job_runs, "handed_over", "update_queued")
        worker = Worker(
            env,
            tmp,
            name="bench",
            concurrency=1,
            extra=(
                "--include=tests.worker_tasks",
                f"--max-tasks-per-child={args.max_tasks_per_child}",
            ),
        )
        worker.start()
        client = redis.client()

        def dispatch() -> None:
            rt.jobs.submit(KIND_NOOP)

        def plain() -> None:
            plain_noop.apply_async((time.time(),), queue="bench")

        def dispatched_done(after: int) -> int:
            with rt.sessions() as s:
                return s.scalar(
                    select(func.count()).where(JobRun.id > after, JobRun.status == "success")
                )

        def last_id() -> int:
            with rt.sessions() as s:
                return s.scalar(select(func.max(JobRun.id))) or 0

        def wait(pred, timeout: float = 600) -> float:  # noqa: ANN001
            deadline = time.monotonic() + timeout
            while not pred():
                if time.monotonic() > deadline:
                    raise TimeoutError("jobs did not finish")
                time.sleep(0.02)
            return time.monotonic()

        # warm-up: the worker builds its runtime, connections are opened
        base = last_id()
        paced(args.warmup, args.rate, dispatch)
        paced(args.warmup, args.rate, plain)
        wait(lambda: dispatched_done(base) >= args.warmup)
        wait(lambda: client.llen(PLAIN_LATENCY_KEY) >= args.warmup)
        client.delete(PLAIN_LATENCY_KEY)

        results: dict[str, dict] = {}
        # latency: open loop, dispatcher and plain jobs alternating, so both see the same
        # worker and the same machine noise
        base = last_id()
        turn = iter(range(2 * args.jobs))
        spans.on = True
        paced(2 * args.jobs, args.rate, lambda: dispatch() if next(turn) % 2 == 0 else plain())
        spans.on = False
        wait(lambda: dispatched_done(base) >= args.jobs)
        wait(lambda: client.llen(PLAIN_LATENCY_KEY) >= args.jobs)
        with rt.sessions() as s:
            rows = s.execute(
                select(JobRun.enqueued_at, JobRun.started_at).where(JobRun.id > base)
            ).all()
        results["dispatcher"] = stats([seconds_between(e, st) for e, st in rows])
        plain_lat = [float(x) for x in client.lrange(PLAIN_LATENCY_KEY, 0, -1)]
        results["plain_delay"] = stats(plain_lat)
        results["dispatcher_steps"] = spans.report()
        client.delete(PLAIN_LATENCY_KEY)

        # throughput: a burst of N jobs, first enqueue to last success
        base = last_id()
        t0 = time.monotonic()
        for _ in range(args.jobs):
            dispatch()
        sent = time.monotonic()
        t1 = wait(lambda: dispatched_done(base) >= args.jobs)
        results["dispatcher"]["burst_jobs_per_s"] = round(args.jobs / (t1 - t0), 1)
        results["dispatcher"]["submit_call_ms_avg"] = round((sent - t0) / args.jobs * 1000, 2)
        t0 = time.monotonic()
        for _ in range(args.jobs):
            plain()
        sent = time.monotonic()
        t1 = wait(lambda: client.llen(PLAIN_LATENCY_KEY) >= args.jobs)
        results["plain_delay"]["burst_jobs_per_s"] = round(args.jobs / (t1 - t0), 1)
        results["plain_delay"]["submit_call_ms_avg"] = round((sent - t0) / args.jobs * 1000, 2)

        d95, p95 = results["dispatcher"]["p95_ms"], results["plain_delay"]["p95_ms"]
        results["targets"] = {
            "dispatcher_p95_le_20ms": d95 <= 20,
            "dispatcher_p95_le_1.5x_plain": d95 <= 1.5 * p95,
            "ratio_p95": round(d95 / p95, 2) if p95 else None,
        }
        results["setup"] = {
            "jobs": args.jobs,
            "rate_per_s_both_kinds": args.rate,
            "postgresql_fsync": not args.no_fsync,
            "worker": "prefork, concurrency 1, prefetch 1, acks late, "
            f"max tasks per child {args.max_tasks_per_child}",
            "loadavg": os.getloadavg(),
        }
        if args.json:
            print(json.dumps(results, indent=2))
        else:
            for name in ("dispatcher", "plain_delay"):
                r = results[name]
                print(
                    f"{name:12s} enqueue->start p50 {r['p50_ms']:7.2f} ms"
                    f"  p95 {r['p95_ms']:7.2f} ms  max {r['max_ms']:7.2f} ms"
                    f"  burst {r['burst_jobs_per_s']:7.1f} jobs/s"
                    f"  submit call {r['submit_call_ms_avg']:.2f} ms"
                )
            steps = results["dispatcher_steps"]
            print(
                "dispatcher steps (caller side) p50/p95 ms: "
                + ", ".join(f"{k} {v['p50_ms']}/{v['p95_ms']}" for k, v in steps.items())
            )
            print(f"targets: {results['targets']}")
            print(f"setup: {results['setup']}")
        client.close()
    finally:
        if worker is not None:
            worker.stop()
        if rt is not None:
            rt.close()
        redis.stop()
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
