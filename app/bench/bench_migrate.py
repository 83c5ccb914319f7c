#!/usr/bin/env python3
"""Migration benchmark (not a test): `mailhelper migrate-sqlite` beside pgloader.

Generates a legacy SQLite database (default 200,000 messages with ~4 KB encrypted-looking
BLOBs, about 1 GB) at the app's schema head, then loads the same file into two databases
of one private PostgreSQL 15 (fsync on): once with `mailhelper migrate-sqlite` (copy plus
verification) and once with pgloader (load alone). Prints rows per second, the ratio and
each client's peak resident memory, and the CPU seconds each run cost the client and the
PostgreSQL server (less sensitive than wall time to other load on the machine). With
`--rounds N` the two tools alternate N times. A second, smaller database shows that the
migration's memory does not grow with the database size.

    tests/harness/apt-install.sh pgloader
    .venv-app/bin/python app/bench/bench_migrate.py [--messages 200000] [--blob-bytes 4096]
                                                    [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(APP))

from tests.servers import PostgresServer  # noqa: E402
from tests.sqlitegen import generate  # noqa: E402


def server_cpu(pg: PostgresServer) -> float:
    """CPU seconds of the PostgreSQL instance so far: every process of it, plus the
    backends that already exited (the postmaster's reaped children)."""
    postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == postmaster:
            ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        elif ppid == postmaster:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def run_measured(
    argv: list[str], env: dict[str, str] | None = None
) -> tuple[int, float, int, float]:
    """Exit status, wall seconds, peak RSS (KiB) and CPU seconds of one child process."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        sys.stdout.write(output.decode(errors="replace")[-4000:])
    return proc.returncode, seconds, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def total_rows(report: dict) -> int:
    return sum(t["rows_source"] for t in report["tables"])


def ours(db_file: Path, url: str, work: Path, name: str, pg: PostgresServer) -> dict:
    report_file = work / f"report-{name}.json"
    argv = [sys.executable, "-m", "mailhelper.cli", "migrate-sqlite", "--source", str(db_file)]
    before = server_cpu(pg)
    code, seconds, rss, cpu = run_measured([*argv, "--target", url, "--report", str(report_file)])
    report = json.loads(report_file.read_text())
    rows = total_rows(report)
    return {
        "exit": code,
        "status": report["status"],
        "rows": rows,
        "seconds": round(seconds, 2),
        "copy_seconds": report["seconds"].get("copy"),
        "verify_seconds": report["seconds"].get("verify"),
        "rows_per_s": round(rows / seconds),
        "peak_rss_mb": round(rss / 1024, 1),
        "client_cpu_s": round(cpu, 2),
        "server_cpu_s": round(server_cpu(pg) - before, 2),
    }


def pgloader(db_file: Path, url: str, work: Path, pg: PostgresServer, dbname: str) -> dict:
    load = work / "load.pgl"
    fd = os.open(load, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(
            f"LOAD DATABASE\n  FROM sqlite://{db_file}\n  INTO {url}\n"
            "  WITH include drop, create tables, create indexes, reset sequences,\n"
            "       prefetch rows = 10000\n"
            "  EXCLUDING TABLE NAMES LIKE 'alembic_version';\n"
        )
    before = server_cpu(pg)
    code, seconds, rss, cpu = run_measured(["pgloader", "--quiet", str(load)])
    server = server_cpu(pg) - before
    import psycopg

    with psycopg.connect(pg.url(dbname)) as conn:
        counts = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore  # noqa: S608
            for t in ("users", "mail_accounts", "folders", "messages", "job_runs", "api_tokens")
        }
    rows = sum(counts.values())
    return {
        "exit": code,
        "rows": rows,
        "counts": counts,
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds),
        "peak_rss_mb": round(rss / 1024, 1),
        "client_cpu_s": round(cpu, 2),
        "server_cpu_s": round(server, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--blob-bytes", type=int, default=4096)
    ap.add_argument("--small", type=int, default=20_000, help="messages of the memory check")
    ap.add_argument("--no-pgloader", action="store_true")
    ap.add_argument(
        "--rounds", type=int, default=1, help="alternate the two tools this many times (noise)"
    )
    args = ap.parse_args()
    if not args.no_pgloader and not shutil.which("pgloader"):
        sys.exit("pgloader is not installed: tests/harness/apt-install.sh pgloader")
    work = Path(tempfile.mkdtemp(prefix="mh-bench-migrate-"))
    work.chmod(0o755)
    pg = PostgresServer(durable=True)
    try:
        started = time.monotonic()
        big = generate(work / "big.db", messages=args.messages, blob_bytes=args.blob_bytes)
        small = generate(work / "small.db", messages=args.small, blob_bytes=args.blob_bytes)
        print(
            f"generated {args.messages:,} messages, {big.stat().st_size / 1e9:.2f} GB "
            f"in {time.monotonic() - started:.1f} s (plus a {args.small:,}-message copy)"
        )
        pg.start()
        result: dict = {"messages": args.messages, "db_bytes": big.stat().st_size}
        print(f"load average before: {os.getloadavg()}")
        result["ours_small"] = ours(small, pg.create_database("ours_small"), work, "small", pg)
        print(f"ours (small db): {result['ours_small']}")
        result["rounds"] = []
        for n in range(args.rounds):
            entry: dict = {"load_before": os.getloadavg()[0]}
            entry["ours"] = ours(big, pg.create_database(f"ours{n}"), work, "big", pg)
            print(f"round {n + 1} ours: {entry['ours']}")
            if not args.no_pgloader:
                print(f"load average before: {os.getloadavg()}")
                url = pg.create_database(f"pgl{n}")
                entry["pgloader"] = pgloader(big, url, work, pg, f"pgl{n}")
                print(f"round {n + 1} pgloader: {entry['pgloader']}")
                entry["ratio"] = round(
                    entry["ours"]["rows_per_s"] / entry["pgloader"]["rows_per_s"], 2
                )
                cpu = sum(entry["pgloader"][k] for k in ("client_cpu_s", "server_cpu_s"))
                cpu_ours = sum(entry["ours"][k] for k in ("client_cpu_s", "server_cpu_s"))
                entry["cpu_ratio"] = round(cpu / cpu_ours, 2)
                print(
                    f"round {n + 1}: ours copy+verify vs pgloader load alone: "
                    f"{entry['ratio']}x the rows/s; pgloader used {entry['cpu_ratio']}x "
                    "our CPU time (client + server)"
                )
            result["rounds"].append(entry)
        result["ours"] = result["rounds"][-1]["ours"]
        print(f"load average after: {os.getloadavg()}")
        print(json.dumps(result, indent=2))
        ok = result["ours"]["status"] == "ok" and result["ours"]["peak_rss_mb"] < 200
        return 0 if ok else 1
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
