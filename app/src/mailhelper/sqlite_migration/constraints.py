"""Foreign keys, unique constraints and secondary indexes are set aside during the bulk load
and rebuilt afterwards from the exact definitions Alembic created.

Before anything is dropped, the definitions (`pg_get_constraintdef`, `pg_get_indexdef`) are
written to a state table in the same transaction, so a killed run leaves a record that the
resumed run rebuilds from. Rebuilding validates every row (a foreign key added to a filled
table checks all of them), and the verification compares the rebuilt schema with the
models. Primary keys stay: they order the copy and say where a resumed copy continues.

BLOB (bytea) columns are switched from storage EXTENDED to EXTERNAL for the load (recorded
the same way, kind `storage`) and back afterwards: their values are ciphertext, which
PostgreSQL's TOAST compression would try and fail to shrink for every row (about 15 % of
the server's CPU time on 4 KB values). Only the column attribute changes; the rows are
the same bytes either way.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import sql

from mailhelper.sqlite_migration.errors import MigrationError

STATE_TABLE = "mailhelper_sqlite_migration_state"

# rebuild order: plain indexes, unique constraints, then the foreign keys that need them
_KIND_ORDER = {"index": 0, "unique": 1, "foreign_key": 2, "storage": 3}


def state_exists(pg: psycopg.Connection) -> bool:
    return pg.execute("SELECT to_regclass(%s) IS NOT NULL", (STATE_TABLE,)).fetchone()[0]  # type: ignore[index]


def _definitions(pg: psycopg.Connection, tables: Sequence[str]) -> list[tuple[str, str, str, str]]:
    """(table, name, kind, definition) of every FK, unique constraint and plain index."""
    rows = pg.execute(
        "SELECT c.conrelid::regclass::text, c.conname, "
        "CASE c.contype WHEN 'f' THEN 'foreign_key' ELSE 'unique' END, "
        "pg_get_constraintdef(c.oid) FROM pg_constraint c "
        "WHERE c.contype IN ('f', 'u') AND c.conrelid = ANY(%s::regclass[]) "
        "UNION ALL "
        "SELECT i.indrelid::regclass::text, i.indexrelid::regclass::text, 'index', "
        "pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indrelid = ANY(%s::regclass[]) AND NOT i.indisprimary "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
        (list(tables), list(tables)),
    ).fetchall()
    return sorted(rows)


Row = tuple[str, str, str, str]


def _compressed_blobs(pg: psycopg.Connection, tables: Sequence[str]) -> list[Row]:
    """(table, column, 'storage', 'EXTENDED') of every bytea column stored EXTENDED."""
    rows = pg.execute(
        "SELECT a.attrelid::regclass::text, a.attname, 'storage', 'EXTENDED' FROM pg_attribute a "
        "WHERE a.attrelid = ANY(%s::regclass[]) AND a.attnum > 0 AND NOT a.attisdropped "
        "AND a.atttypid = 'bytea'::regtype AND a.attstorage = 'x'",
        (list(tables),),
    ).fetchall()
    return sorted(rows)


def _set_storage(pg: psycopg.Connection, table: str, column: str, storage: str) -> None:
    pg.execute(
        sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET STORAGE {}").format(
            sql.Identifier(table), sql.Identifier(column), sql.SQL(storage)
        )
    )


def relax(pg: psycopg.Connection, tables: Sequence[str]) -> int:
    """Record and drop the constraints and indexes (once; a resumed run finds them recorded).

    Returns how many objects are set aside.
    """
    with pg.transaction():
        if state_exists(pg):
            count = sql.SQL("SELECT count(*) FROM {} WHERE kind <> 'storage'").format(
                sql.Identifier(STATE_TABLE)
            )
            return pg.execute(count).fetchone()[0]  # type: ignore[index]
        defs = _definitions(pg, tables)
        storage = _compressed_blobs(pg, tables)
        pg.execute(
            sql.SQL(
                "CREATE TABLE {} (tbl text NOT NULL, name text NOT NULL, kind text NOT NULL, "
                "definition text NOT NULL)"
            ).format(sql.Identifier(STATE_TABLE))
        )
        with pg.cursor() as cur:
            cur.executemany(
                sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s)").format(
                    sql.Identifier(STATE_TABLE)
                ),
                defs + storage,
            )
        for table, column, _, _ in storage:
            _set_storage(pg, table, column, "EXTERNAL")
        for kind in ("foreign_key", "unique", "index"):
            for table, name, k, _ in defs:
                if k != kind:
                    continue
                if kind == "index":
                    pg.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
                else:
                    pg.execute(
                        sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                            sql.Identifier(table), sql.Identifier(name)
                        )
                    )
        return len(defs)


def restore(pg: psycopg.Connection, tables: Sequence[str]) -> int:
    """Rebuild what `relax` set aside, check the result equals the record, drop the record.

    One transaction: a run killed here rebuilds again on resume. Returns the count rebuilt.
    """
    if not state_exists(pg):
        return 0
    with pg.transaction():
        recorded = pg.execute(
            sql.SQL("SELECT tbl, name, kind, definition FROM {}").format(
                sql.Identifier(STATE_TABLE)
            )
        ).fetchall()
        for table, name, kind, definition in sorted(recorded, key=lambda r: _KIND_ORDER[r[2]]):
            if kind == "storage":
                if definition != "EXTENDED":
                    raise MigrationError(f"unexpected recorded storage {definition!r}")
                _set_storage(pg, table, name, "EXTENDED")
            elif kind == "index":
                pg.execute(definition)
            else:
                pg.execute(
                    sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(
                        sql.Identifier(table), sql.Identifier(name)
                    )
                    + sql.SQL(definition)
                )
        objects = sorted(tuple(r) for r in recorded if r[2] != "storage")
        if sorted(_definitions(pg, tables)) != objects:
            raise MigrationError("rebuilt constraints and indexes differ from the recorded ones")
        blobs = sorted(tuple(r) for r in recorded if r[2] == "storage")
        if _compressed_blobs(pg, tables) != blobs:
            raise MigrationError("the storage of BLOB columns differs from the recorded one")
        pg.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(STATE_TABLE)))
    return len(objects)
