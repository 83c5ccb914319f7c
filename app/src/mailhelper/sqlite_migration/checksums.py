"""Verification: per table, row count and a SHA-256 digest of the rows in normal form
(binary COPY encoding, primary-key order) computed independently on both sides.

The SQLite side re-reads and re-encodes the source; the PostgreSQL side reads the table
back with `COPY (SELECT ... ORDER BY id) TO STDOUT (FORMAT BINARY)`. The two sides run in
parallel threads (sqlite3, psycopg and hashlib release the GIL in their heavy parts).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from psycopg import sql

from mailhelper.db import make_engine
from mailhelper.models import Base
from mailhelper.sqlite_migration.constraints import state_exists
from mailhelper.sqlite_migration.digest import new_digest
from mailhelper.sqlite_migration.encoding import HEADER, TRAILER, RowEncoder
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


def sqlite_checksums(path: Path, specs: Sequence[TableSpec]) -> list[Checksum]:
    conn = open_source(path)
    try:
        conn.execute("BEGIN")  # one snapshot for every table
        out = []
        for spec in specs:
            enc = RowEncoder(spec.name, spec.columns, spec.types)
            h, buf, count = new_digest(), bytearray(HEADER), 0
            cur = conn.execute(f'SELECT {spec.column_list} FROM "{spec.name}" ORDER BY id')  # noqa: S608 - names from the catalog
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


def pg_checksums(conninfo: str, specs: Sequence[TableSpec]) -> list[Checksum]:
    with psycopg.connect(conninfo) as pg:
        pg.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        out = []
        for spec in specs:
            h = new_digest()
            stmt = sql.SQL("COPY (SELECT {} FROM {} ORDER BY id) TO STDOUT (FORMAT BINARY)").format(
                sql.SQL(", ").join(map(sql.Identifier, spec.columns)), sql.Identifier(spec.name)
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


def compare_tables(
    path: Path,
    conninfo: str,
    specs: Sequence[TableSpec],
    known: Mapping[str, Checksum] | None = None,
) -> list[TableCheck]:
    """Source side: `known` checksums (hashed during the copy) or a re-read of the source,
    in a thread beside the target side."""
    known = known or {}
    reread = [s for s in specs if s.name not in known]
    with _short_gil_turns(), ThreadPoolExecutor(2, thread_name_prefix="migrate-verify") as pool:
        source = pool.submit(sqlite_checksums, path, reread)
        target = pool.submit(pg_checksums, conninfo, specs)
        sources = dict(zip((s.name for s in reread), source.result(), strict=True))
        targets = target.result()
    return [
        TableCheck(spec.name, sources[spec.name], t)
        if spec.name in sources
        else TableCheck(spec.name, known[spec.name], t, "copy stream")
        for spec, t in zip(specs, targets, strict=True)
    ]


def schema_differences(pg: psycopg.Connection, sqlalchemy_url: str) -> list[str]:
    """Empty when the target schema equals the models (= what Alembic makes) and no
    interrupted copy left constraints set aside."""
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
