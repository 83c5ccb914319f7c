"""Primary-key ranges ("segments") that are copied and verified in parallel.

A large table is split at the id of its middle row (taken from the source, so both sides
and a resumed run use the same boundaries): each segment has its own COPY stream, its own
PostgreSQL backend and its own digest. On two cores the two server backends (heap, TOAST,
WAL) are the bulk of the work, so two streams roughly halve it.

Checksum of a table (the normal form `checksums` describes):
- one segment: SHA-256 of its binary COPY stream (header, rows in id order, trailer);
- several: SHA-256 of the concatenated raw SHA-256 digests of each segment's stream, in
  id order.
Segments cover every id (the first has no lower bound, the last no upper one), so a row
the target has and the source has not is counted and hashed too.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from mailhelper.sqlite_migration.digest import new_digest

# tables below this many rows are one segment (splitting costs a connection and a thread)
SPLIT_MIN_ROWS = 10_000
STREAMS = 2


@dataclass(frozen=True)
class Segment:
    """Rows with lo <= id < hi (None: unbounded)."""

    lo: int | None
    hi: int | None

    def where(self, after: int | None = None) -> str:
        """The SQL condition (the same text for SQLite and PostgreSQL); `after` narrows it to
        ids above a resumed copy's last committed id. The bounds are Python ints, written
        as literals (COPY takes no parameters)."""
        parts = []
        for op, value in (("id >", after), ("id >=", self.lo), ("id <", self.hi)):
            if value is not None:
                parts.append(f"{op} {int(value)}")
        return " AND ".join(parts) or "TRUE"


WHOLE = Segment(None, None)


def split(conn: sqlite3.Connection, table: str, rows: int, streams: int = STREAMS) -> list[Segment]:
    """Boundaries at the ids of evenly spaced rows of the source table (id order)."""
    if streams < 2 or rows < SPLIT_MIN_ROWS:
        return [WHOLE]
    cuts: list[int] = []
    for k in range(1, streams):
        row = conn.execute(
            f'SELECT id FROM "{table}" ORDER BY id LIMIT 1 OFFSET ?',  # noqa: S608 - catalog name
            (rows * k // streams,),
        ).fetchone()
        if row is not None and (not cuts or row[0] > cuts[-1]):
            cuts.append(int(row[0]))
    bounds: list[int | None] = [None, *cuts, None]
    return [Segment(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def combine(digests: list[str]) -> str:
    """The table's checksum from its segments' hex digests (one segment: that digest)."""
    if len(digests) == 1:
        return digests[0]
    h = new_digest()
    for d in digests:
        h.update(bytes.fromhex(d))
    return str(h.hexdigest())
