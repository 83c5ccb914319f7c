"""Streams one table from SQLite into PostgreSQL in committed batches of binary COPY.

A reader thread pulls rows (in primary-key order, after the target's highest id) and
encodes them while the caller's thread sends the previous batch; the queue between them
holds a few batches only, so memory does not grow with the table. Each batch is one COPY in
its own transaction: a kill loses at most the batch in flight, and the next run continues
after the target's highest id.

One call copies one segment (a primary-key range, see `segments`); the runner copies the
segments of a large table at once, each on its own connection. A segment copied from its
first row is hashed on the way (the rows exactly as read from the source, in the normal
form of `checksums`), so the verification needs to re-read the source only for a segment
a resumed run continued. `cancel` stops the copy between batches, rolling back the batch
in flight (Ctrl-C / SIGTERM reach the main thread only).
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from mailhelper.sqlite_migration.digest import new_digest
from mailhelper.sqlite_migration.encoding import HEADER, TRAILER, RowEncoder
from mailhelper.sqlite_migration.errors import MigrationError
from mailhelper.sqlite_migration.segments import Segment
from mailhelper.sqlite_migration.source import open_source
from mailhelper.sqlite_migration.tables import TableSpec

FETCH_ROWS = 256
QUEUE_BATCHES = 2


@dataclass
class Batch:
    data: bytearray
    rows: int
    last_id: int


@dataclass
class Done:
    rows: int
    digest: str | None  # of the whole segment, when the copy began at its first row


class CopyCancelledError(MigrationError):
    """Another segment failed or the run was interrupted: this one stopped between batches."""


class _Stopped(Exception):  # noqa: N818 - control flow between the two threads
    pass


def _reader(
    path: Path,
    spec: TableSpec,
    segment: Segment,
    after_id: int | None,
    out: queue.Queue[Batch | Done | BaseException],
    stop: threading.Event,
    batch_rows: int,
    batch_bytes: int,
) -> None:
    def put(item: Batch | Done | BaseException) -> None:
        while True:
            if stop.is_set():
                raise _Stopped
            try:
                out.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    conn: sqlite3.Connection | None = None
    try:
        conn = open_source(path)
        enc = RowEncoder(spec.name, spec.columns, spec.types)
        cur = conn.execute(
            f'SELECT {spec.column_list} FROM "{spec.name}" '  # noqa: S608 - catalog names, int bounds
            f"WHERE {segment.where(after_id)} ORDER BY id"
        )
        digest = new_digest() if after_id is None else None
        if digest is not None:
            digest.update(HEADER)
        buf, count, total, last_id = bytearray(HEADER), 0, 0, after_id or 0

        def send() -> None:
            if digest is not None:
                digest.update(memoryview(buf)[len(HEADER) :])
            put(Batch(buf + TRAILER, count, last_id))

        while True:
            rows = cur.fetchmany(FETCH_ROWS)
            if not rows:
                break
            for row in rows:
                enc.append(buf, row)
            count += len(rows)
            total += len(rows)
            last_id = rows[-1][enc.id_index]
            if count >= batch_rows or len(buf) >= batch_bytes:
                send()
                buf, count = bytearray(HEADER), 0
        if count:
            send()
        if digest is not None:
            digest.update(TRAILER)
        put(Done(total, digest.hexdigest() if digest is not None else None))
    except _Stopped:
        pass
    except BaseException as exc:  # handed to the caller's thread, which raises it
        with contextlib.suppress(_Stopped):
            put(exc)
    finally:
        if conn is not None:
            conn.close()


def copy_table(
    path: Path,
    pg: psycopg.Connection,
    spec: TableSpec,
    *,
    segment: Segment,
    after_id: int | None,
    batch_rows: int,
    batch_bytes: int,
    on_batch: Callable[[int], None],
    cancel: threading.Event | None = None,
) -> Done:
    """Copy the segment's rows (with id > after_id when resuming): how many were committed
    and, when after_id is None (nothing of the segment on the target), its source digest."""
    cancel = cancel or threading.Event()
    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(spec.name), sql.SQL(", ").join(map(sql.Identifier, spec.columns))
    )
    batches: queue.Queue[Batch | Done | BaseException] = queue.Queue(QUEUE_BATCHES)
    stop = threading.Event()
    reader = threading.Thread(
        target=_reader,
        args=(path, spec, segment, after_id, batches, stop, batch_rows, batch_bytes),
        name=f"migrate-read-{spec.name}",
        daemon=True,
    )
    reader.start()
    try:
        while True:
            item = _next(batches, cancel)
            if isinstance(item, Done):
                return item
            if isinstance(item, BaseException):
                raise item
            with pg.transaction(), pg.cursor() as cur:
                with cur.copy(stmt) as copy:
                    copy.write(item.data)
                if cancel.is_set():  # leaving the block by an exception rolls the batch back
                    raise CopyCancelledError(f"{spec.name}: copy stopped")
            on_batch(item.rows)
    finally:
        stop.set()
        reader.join()


def _next(
    batches: queue.Queue[Batch | Done | BaseException], cancel: threading.Event
) -> Batch | Done | BaseException:
    while True:
        if cancel.is_set():
            raise CopyCancelledError("copy stopped")
        try:
            return batches.get(timeout=0.2)
        except queue.Empty:
            continue
