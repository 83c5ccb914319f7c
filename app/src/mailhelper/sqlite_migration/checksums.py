"""Verification: per table, row count and a SHA-256 digest of the rows in normal form
(binary COPY encoding, primary-key order) computed independently on both sides.

The SQLite side re-reads and re-encodes the source; the PostgreSQL side reads the table
back with `COPY (SELECT ... ORDER BY id) TO STDOUT (FORMAT BINARY)`. A large table is
hashed in segments (primary-key ranges, see `segments`), each side's segments in parallel
threads, and both sides at once (sqlite3, psycopg and hashlib release the GIL in their
heavy parts); the target's threads share one exported snapshot.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from mailhelper.db import make_engine
from mailhelper.models import Base
from mailhelper.sqlite_migration.constraints import state_exists
from mailhelper.sqlite_migration.digest import new_digest
from mailhelper.sqlite_migration.encoding import HEADER, TRAILER, RowEncoder
from mailhelper.sqlite_migration.segments import STREAMS, Segment, combine, split
from mailhelper.sqlite_migration.source import open_source
from mailhelper.sqlite_migration.tables import TableSpec

FLUSH_BYTES = 1 << 20
SWITCH_INTERVAL = 0.0005


@dataclass(frozen=True)
class Checksum:
    rows: int
    digest: str


@dataclass(frozen=True)
class TableCheck:
    table: str
    source: Checksum
    target: Checksum
    source_read: str = "re-read"  # or "copy stream": hashed while this run copied it

    @property
    def ok(self) -> bool:
        return self.source == self.target

    def to_dict(self) -> dict[str, object]:
        return {
            "table": self.table,
            "rows": self.source.rows,
            "rows_source": self.source.rows,
            "rows_target": self.target.rows,
            "checksum_source": self.source.digest,
            "checksum_target": self.target.digest,
            "status": "ok" if self.ok else "mismatch",
            "checksum_source_from": self.source_read,
        }


@dataclass(frozen=True)
class Plan:
    """Rows of a source table and the segments it is copied and verified in."""

    rows: int
    segments: tuple[Segment, ...]


def plan(path: Path, specs: Sequence[TableSpec], streams: int = STREAMS) -> dict[str, Plan]:
    conn = open_source(path)
    try:
        conn.execute("BEGIN")
        out = {}
        for spec in specs:
            rows = conn.execute(f'SELECT count(*) FROM "{spec.name}"').fetchone()[0]  # noqa: S608 - names from the catalog
            out[spec.name] = Plan(int(rows), tuple(split(conn, spec.name, int(rows), streams)))
        return out
    finally:
        conn.close()


Job = tuple[TableSpec, Segment]


def sqlite_checksums(path: Path, jobs: Sequence[Job]) -> list[Checksum]:
    """Row count and digest of each (table, segment) from the source, one snapshot."""
    conn = open_source(path)
    try:
        conn.execute("BEGIN")
        out = []
        for spec, segment in jobs:
            enc = RowEncoder(spec.name, spec.columns, spec.types)
            h, buf, count = new_digest(), bytearray(HEADER), 0
            cur = conn.execute(
                f'SELECT {spec.column_list} FROM "{spec.name}" '  # noqa: S608 - catalog names, int bounds
                f"WHERE {segment.where()} ORDER BY id"
            )
            while rows := cur.fetchmany(512):
                for row in rows:
                    enc.append(buf, row)
                count += len(rows)
                if len(buf) >= FLUSH_BYTES:
                    h.update(buf)
                    buf.clear()
            buf += TRAILER
            h.update(buf)
            out.append(Checksum(count, h.hexdigest()))
        return out
    finally:
        conn.close()


def pg_checksums(conninfo: str, jobs: Sequence[Job], snapshot: str | None = None) -> list[Checksum]:
    """Row count and digest of each (table, segment) read back from the target, in the
    snapshot `snapshot` (exported by another connection) when given."""
    with psycopg.connect(conninfo) as pg:
        pg.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        if snapshot is not None:
            pg.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        out = []
        for spec, segment in jobs:
            h = new_digest()
            stmt = sql.SQL(
                "COPY (SELECT {} FROM {} WHERE {} ORDER BY id) TO STDOUT (FORMAT BINARY)"
            )
            stmt = stmt.format(
                sql.SQL(", ").join(map(sql.Identifier, spec.columns)),
                sql.Identifier(spec.name),
                sql.SQL(segment.where()),  # type: ignore[arg-type] - int bounds only
            )
            with pg.cursor() as cur:
                with cur.copy(stmt) as copy:
                    for chunk in copy:
                        h.update(chunk)
                out.append(Checksum(cur.rowcount, h.hexdigest()))
        return out


@contextlib.contextmanager
def _short_gil_turns() -> Iterator[None]:
    """The encoding thread keeps the GIL for its whole turn while the reading thread waits to
    take the next row; shorter turns measured 10 to 20 % faster on 200,000 messages."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _share(weights: Sequence[int], workers: int) -> list[list[int]]:
    """Job indexes per worker: the largest job first to the least loaded worker."""
    loads, out = [0] * workers, [[] for _ in range(workers)]  # type: list[int], list[list[int]]
    for i in sorted(range(len(weights)), key=lambda i: -weights[i]):
        w = loads.index(min(loads))
        out[w].append(i)
        loads[w] += weights[i]
    return [sorted(idx) for idx in out if idx]


def _run_shared(
    pool: ThreadPoolExecutor,
    fn: Callable[..., list[Checksum]],
    first: object,
    jobs: Sequence[Job],
    weights: Sequence[int],
    workers: int,
    *extra: object,
) -> Callable[[], list[Checksum]]:
    groups = _share(weights, workers)
    futures = [pool.submit(fn, first, [jobs[i] for i in g], *extra) for g in groups]

    def result() -> list[Checksum]:
        out: list[Checksum | None] = [None] * len(jobs)
        for g, f in zip(groups, futures, strict=True):
            for i, c in zip(g, f.result(), strict=True):
                out[i] = c
        return [c for c in out if c is not None]

    return result


def compare_tables(
    path: Path,
    conninfo: str,
    specs: Sequence[TableSpec],
    known: Mapping[tuple[str, int], Checksum] | None = None,
    plans: Mapping[str, Plan] | None = None,
    streams: int = STREAMS,
) -> list[TableCheck]:
    """Both sides segment by segment: the source from `known` (hashed during the copy,
    keyed by table and segment index) or a re-read, the target read back; up to `streams`
    threads per side, the target's in one exported snapshot."""
    known = known or {}
    plans = plans or plan(path, specs, streams)
    jobs: list[Job] = [(s, seg) for s in specs for seg in plans[s.name].segments]
    keys = [(s.name, i) for s in specs for i in range(len(plans[s.name].segments))]
    weights = [plans[s.name].rows // len(plans[s.name].segments) + 1 for s, _ in jobs]
    reread = [j for j, k in enumerate(keys) if k not in known]
    workers = max(1, streams)
    with (
        _short_gil_turns(),
        psycopg.connect(conninfo) as holder,
        ThreadPoolExecutor(2 * workers, thread_name_prefix="migrate-verify") as pool,
    ):
        holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = str(holder.execute("SELECT pg_export_snapshot()").fetchone()[0])  # type: ignore[index]
        target = _run_shared(pool, pg_checksums, conninfo, jobs, weights, workers, snapshot)
        source = _run_shared(
            pool,
            sqlite_checksums,
            path,
            [jobs[j] for j in reread],
            [weights[j] for j in reread],
            workers,
        )
        targets = target()
        sources = dict(zip((keys[j] for j in reread), source(), strict=True))
    checks, at = [], 0
    for spec in specs:
        n = len(plans[spec.name].segments)
        src = [sources.get(k) or known[k] for k in keys[at : at + n]]
        dst = targets[at : at + n]
        fresh = sum(1 for k in keys[at : at + n] if k not in sources)
        label = (
            "copy stream" if fresh == n else ("re-read" if fresh == 0 else "copy stream + re-read")
        )
        checks.append(TableCheck(spec.name, _total(src), _total(dst), label))
        at += n
    return checks


def _total(parts: Sequence[Checksum]) -> Checksum:
    return Checksum(sum(p.rows for p in parts), combine([p.digest for p in parts]))


def schema_differences(pg: psycopg.Connection, sqlalchemy_url: str) -> list[str]:
    """Empty when the target schema equals the models (= what Alembic makes) and no
    interrupted copy left constraints set aside."""
    # Imported here: the CLI loads this module for every command, Alembic only this one needs.
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    problems = []
    if state_exists(pg):
        problems.append("an interrupted copy left constraints and indexes set aside")
    engine = make_engine(sqlalchemy_url, pool_pre_ping=False)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    problems.extend(str(d)[:300] for d in diff)
    return problems
