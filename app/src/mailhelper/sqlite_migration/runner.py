"""One migration run: schema by Alembic, guarded target, copy, rebuild, verification."""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from mailhelper import __version__, db
from mailhelper.sqlite_migration import constraints
from mailhelper.sqlite_migration.checksums import (
    Checksum,
    Plan,
    compare_tables,
    plan,
    schema_differences,
)
from mailhelper.sqlite_migration.copier import copy_table
from mailhelper.sqlite_migration.digest import DIGEST
from mailhelper.sqlite_migration.errors import MigrationError, TargetNotEmptyError
from mailhelper.sqlite_migration.progress import Progress
from mailhelper.sqlite_migration.segments import STREAMS, Segment
from mailhelper.sqlite_migration.source import (
    check_revision,
    expected_revision,
    open_source,
)
from mailhelper.sqlite_migration.tables import TableSpec, table_specs
from mailhelper.sqlite_migration.target_url import TargetURL

# session advisory lock: one run per target database at a time (held until disconnect)
LOCK_KEY = 0x6D68_6D69_6772  # "mhmigr"
DEFAULT_BATCH_ROWS = 5_000
DEFAULT_BATCH_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class MigrationOptions:
    source: Path
    target: TargetURL
    verify_only: bool = False
    resume: bool = False
    replace: bool = False
    batch_rows: int = DEFAULT_BATCH_ROWS
    batch_bytes: int = DEFAULT_BATCH_BYTES
    streams: int = STREAMS  # parallel COPY streams (and verification threads per side)


@dataclass
class MigrationReport:
    """What the run did; `to_dict()` is the JSON a playbook reads."""

    source: str
    target: str
    mode: str
    status: str = "error"
    exit_code: int = 1
    message: str | None = None
    revision_source: str | None = None
    revision_expected: str | None = None
    source_changed: bool = False
    tables: list[dict[str, Any]] = field(default_factory=list)
    copied_rows: dict[str, int] = field(default_factory=dict)
    schema: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    started_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())
    finished_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": "mailhelper migrate-sqlite",
            "version": __version__,
            "status": self.status,
            "exit_code": self.exit_code,
            "message": self.message,
            "mode": self.mode,
            "source": self.source,
            "target": self.target,
            "revision": {"source": self.revision_source, "expected": self.revision_expected},
            "source_changed": self.source_changed,
            "digest": DIGEST,
            "tables": self.tables,
            "schema": self.schema,
            "copied_rows": self.copied_rows,
            "seconds": self.seconds,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


def _occupied(pg: psycopg.Connection, specs: list[TableSpec]) -> list[str]:
    return [
        s.name
        for s in specs
        if pg.execute(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(s.name))
        ).fetchone()[0]  # type: ignore[index]
    ]


def _guard_target(pg: psycopg.Connection, specs: list[TableSpec], opts: MigrationOptions) -> None:
    occupied = _occupied(pg, specs)
    incomplete = constraints.state_exists(pg)
    if not (occupied or incomplete):
        return
    if opts.replace:
        names = sql.SQL(", ").join(sql.Identifier(s.name) for s in specs)
        pg.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(names))
        return
    if opts.resume:
        return
    what = f"rows in {', '.join(occupied)}" if occupied else "an interrupted copy"
    raise TargetNotEmptyError(
        f"target {opts.target.display} holds {what}; use --resume to continue an interrupted "
        "copy or --replace to empty the target first"
    )


def _reset_sequences(pg: psycopg.Connection, specs: list[TableSpec]) -> None:
    for spec in specs:
        pg.execute(
            sql.SQL(
                "SELECT setval(pg_get_serial_sequence(%s, 'id'), COALESCE(max(id), 1), "
                "max(id) IS NOT NULL) FROM {}"
            ).format(sql.Identifier(spec.name)),
            (spec.name,),
        )


def _copy(
    opts: MigrationOptions,
    pg: psycopg.Connection,
    specs: list[TableSpec],
    plans: dict[str, Plan],
    report: MigrationReport,
    progress: Progress,
) -> dict[tuple[str, int], Checksum]:
    """Copy every table, the segments of a large one at once (one connection each).

    Returns the source checksums of the segments copied from their first row, keyed by
    (table, segment index). A resumed run continues each segment after the highest id the
    target holds in that segment's range.
    """
    names = [s.name for s in specs]
    set_aside = constraints.relax(pg, names)
    progress.note(f"set aside {set_aside} foreign keys, unique constraints and indexes")
    streams = max(len(p.segments) for p in plans.values()) if plans else 1
    known: dict[tuple[str, int], Checksum] = {}
    cancel = threading.Event()
    with contextlib.ExitStack() as stack:
        conns = [pg]
        for _ in range(streams - 1):
            conns.append(stack.enter_context(psycopg.connect(opts.target.libpq, autocommit=True)))
        for conn in conns:
            # batches are re-checked by the verification and found again by max(id) after a
            # crash: no need to wait for each batch's WAL flush
            conn.execute("SET synchronous_commit TO OFF")
        pool = stack.enter_context(ThreadPoolExecutor(streams, thread_name_prefix="migrate-copy"))
        for spec in specs:
            segments = plans[spec.name].segments
            starts = [_resume_point(pg, spec.name, seg) for seg in segments]
            already = _count(pg, spec.name) if any(a is not None for a in starts) else 0
            progress.start(spec.name, plans[spec.name].rows, already)
            futures = [
                pool.submit(
                    copy_table,
                    opts.source,
                    conns[i],
                    spec,
                    segment=seg,
                    after_id=starts[i],
                    batch_rows=opts.batch_rows,
                    batch_bytes=opts.batch_bytes,
                    on_batch=progress.advance,
                    cancel=cancel,
                )
                for i, seg in enumerate(segments)
            ]
            try:
                done = [f.result() for f in futures]
            except BaseException:
                cancel.set()  # the other segments roll back their batch in flight and stop
                concurrent.futures.wait(futures)
                raise
            report.copied_rows[spec.name] = sum(d.rows for d in done)
            for i, d in enumerate(done):
                if d.digest is not None:
                    known[(spec.name, i)] = Checksum(d.rows, d.digest)
            progress.finish()
        for conn in conns:
            conn.execute("SET synchronous_commit TO ON")
    progress.note("rebuilding foreign keys, unique constraints and indexes")
    report.schema["rebuilt"] = constraints.restore(pg, names)
    _reset_sequences(pg, specs)
    pg.execute("ANALYZE")
    return known


def _resume_point(pg: psycopg.Connection, table: str, segment: Segment) -> int | None:
    """None when the target has no row in the segment, else its highest id there."""
    row = pg.execute(
        sql.SQL("SELECT max(id) FROM {} WHERE {}").format(
            sql.Identifier(table),
            sql.SQL(segment.where()),  # type: ignore[arg-type] - int bounds only
        )
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def _count(pg: psycopg.Connection, table: str) -> int:
    row = pg.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    return int(row[0]) if row else 0


def _target_revision(pg: psycopg.Connection) -> str | None:
    if not pg.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
        return None
    rows = pg.execute("SELECT version_num FROM alembic_version").fetchall()
    return ",".join(sorted(r[0] for r in rows)) or None


def run_migration(
    opts: MigrationOptions, progress: Progress, report: MigrationReport
) -> MigrationReport:
    """Copy (unless verify-only) and verify; fills `report`. Raises MigrationError subclasses,
    KeyboardInterrupt or `Interrupted` for the caller to map to an exit status."""
    started = time.monotonic()
    report.revision_expected = expected_revision()
    # this connection stays open to notice commits by anybody else (PRAGMA data_version)
    watcher = open_source(opts.source)
    try:
        report.revision_source = check_revision(watcher, opts.source)
        version = _data_version(watcher)
        _migrate_and_verify(opts, progress, report, started)
        if _data_version(watcher) != version:
            report.source_changed = True
            report.status = "mismatch"
            report.message = (
                "the source changed during the run (is the app still writing to it?): "
                "stop it and run again with --replace"
            )
    finally:
        watcher.close()
    return report


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def _migrate_and_verify(
    opts: MigrationOptions, progress: Progress, report: MigrationReport, started: float
) -> None:
    with psycopg.connect(opts.target.libpq, autocommit=True) as pg:
        if not pg.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:  # type: ignore[index]
            raise MigrationError("another migrate-sqlite run is working on this target")
        if not opts.verify_only:
            progress.note("bringing the target schema to the head revision (Alembic)")
            db.upgrade(opts.target.sqlalchemy)
        found = _target_revision(pg)
        if found != report.revision_expected:
            raise MigrationError(
                f"target is at schema revision {found}, expected {report.revision_expected}"
            )
        source = open_source(opts.source)
        try:
            specs = table_specs(pg, source)
        finally:
            source.close()
        plans = plan(opts.source, specs, opts.streams)
        known: dict[tuple[str, int], Checksum] = {}
        if not opts.verify_only:
            _guard_target(pg, specs, opts)
            known = _copy(opts, pg, specs, plans, report, progress)
            report.seconds["copy"] = round(time.monotonic() - started, 3)
        progress.note("verifying: row counts and checksums on both sides")
        verify_started = time.monotonic()
        checks = compare_tables(
            opts.source, opts.target.libpq, specs, known, plans, max(1, opts.streams)
        )
        differences = schema_differences(pg, opts.target.sqlalchemy)
    report.seconds["verify"] = round(time.monotonic() - verify_started, 3)
    report.seconds["total"] = round(time.monotonic() - started, 3)
    report.tables = [c.to_dict() for c in checks]
    report.schema.update(
        {"status": "mismatch" if differences else "ok", "differences": differences}
    )
    ok = all(c.ok for c in checks) and not differences
    report.status = "ok" if ok else "mismatch"
