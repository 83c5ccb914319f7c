"""Streams one table from SQLite into PostgreSQL in committed batches of binary COPY.

A reader thread pulls rows (in primary-key order, after the target's highest id) and
encodes them while the caller's thread sends the previous batch; the queue between them
holds a few batches only, so memory does not grow with the table. Each batch is one COPY in
its own transaction: a kill loses at most the batch in flight, and the next run continues
after the target's highest id.

A table copied from its first row is hashed on the way (the rows exactly as read from the
source, in the normal form of `checksums`), so the verification needs to re-read the
source only for a table a resumed run continued.
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
    digest: str | None  # of the whole table, when the copy began at its first row


class _Stopped(Exception):  # noqa: N818 - control flow between the two threads
    pass


def _reader(
    path: Path,
    spec: TableSpec,
    after_id: int,
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
            f'SELECT {spec.column_list} FROM "{spec.name}" WHERE id > ? ORDER BY id',  # noqa: S608 - names from the catalog
            (after_id,),
        )
        digest = new_digest() if after_id == 0 else None
        if digest is not None:
            digest.update(HEADER)
        buf, count, total, last_id = bytearray(HEADER), 0, 0, after_id

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
    after_id: int,
    batch_rows: int,
    batch_bytes: int,
    on_batch: Callable[[int], None],
) -> Done:
    """Copy the rows with id > after_id: how many were committed and, when after_id is 0,
    the source checksum of the table."""
    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(spec.name), sql.SQL(", ").join(map(sql.Identifier, spec.columns))
    )
    batches: queue.Queue[Batch | Done | BaseException] = queue.Queue(QUEUE_BATCHES)
    stop = threading.Event()
    reader = threading.Thread(
        target=_reader,
        args=(path, spec, after_id, batches, stop, batch_rows, batch_bytes),
        name=f"migrate-read-{spec.name}",
        daemon=True,
    )
    reader.start()
    try:
        while True:
            item = batches.get()
            if isinstance(item, Done):
                return item
            if isinstance(item, BaseException):
                raise item
            with pg.transaction(), pg.cursor() as cur, cur.copy(stmt) as copy:
                copy.write(item.data)
            on_batch(item.rows)
    finally:
        stop.set()
        reader.join()
