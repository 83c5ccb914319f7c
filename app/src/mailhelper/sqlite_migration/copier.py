"""Streams one table from SQLite into PostgreSQL in committed batches of binary COPY.

A reader thread pulls rows (in primary-key order, after the target's highest id) and
encodes them while the caller's thread sends the previous batch; the queue between them
holds a few batches only, so memory does not grow with the table. Each batch is one COPY in
its own transaction: a kill loses at most the batch in flight, and the next run continues
after the target's highest id.
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

from mailhelper.sqlite_migration.encoding import HEADER, TRAILER, RowEncoder
from mailhelper.sqlite_migration.source import open_source
from mailhelper.sqlite_migration.tables import TableSpec

FETCH_ROWS = 256
QUEUE_BATCHES = 3


@dataclass
class Batch:
    data: bytearray
    rows: int
    last_id: int


class _Stopped(Exception):  # noqa: N818 - control flow between the two threads
    pass


def _reader(
    path: Path,
    spec: TableSpec,
    after_id: int,
    out: queue.Queue[Batch | BaseException | None],
    stop: threading.Event,
    batch_rows: int,
    batch_bytes: int,
) -> None:
    def put(item: Batch | BaseException | None) -> None:
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
            f'SELECT {spec.column_list} FROM "{spec.name}" WHERE id > ? ORDER BY id',  # noqa: S608 - names from the catalog
            (after_id,),
        )
        buf, count, last_id = bytearray(HEADER), 0, after_id
        while True:
            rows = cur.fetchmany(FETCH_ROWS)
            if not rows:
                break
            for row in rows:
                enc.append(buf, row)
            count += len(rows)
            last_id = rows[-1][enc.id_index]
            if count >= batch_rows or len(buf) >= batch_bytes:
                buf += TRAILER
                put(Batch(buf, count, last_id))
                buf, count = bytearray(HEADER), 0
        if count:
            buf += TRAILER
            put(Batch(buf, count, last_id))
        put(None)
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
    after_id: int,
    batch_rows: int,
    batch_bytes: int,
    on_batch: Callable[[int], None],
) -> int:
    """Copy the rows with id > after_id; returns how many were committed."""
    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(spec.name), sql.SQL(", ").join(map(sql.Identifier, spec.columns))
    )
    batches: queue.Queue[Batch | BaseException | None] = queue.Queue(QUEUE_BATCHES)
    stop = threading.Event()
    reader = threading.Thread(
        target=_reader,
        args=(path, spec, after_id, batches, stop, batch_rows, batch_bytes),
        name=f"migrate-read-{spec.name}",
        daemon=True,
    )
    reader.start()
    copied = 0
    try:
        while True:
            item = batches.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            with pg.transaction(), pg.cursor() as cur, cur.copy(stmt) as copy:
                copy.write(item.data)
            copied += item.rows
            on_batch(item.rows)
    finally:
        stop.set()
        reader.join()
    return copied
