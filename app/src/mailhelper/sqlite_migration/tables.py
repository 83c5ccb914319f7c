"""What is copied: the app's tables in dependency order, with the target's columns and types
(the Alembic-made schema decides), checked against the SQLite source."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import psycopg

from mailhelper.models import Base
from mailhelper.sqlite_migration.errors import MigrationError
from mailhelper.sqlite_migration.source import source_columns


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[str, ...]
    types: tuple[str, ...]

    @property
    def column_list(self) -> str:
        return ", ".join(f'"{c}"' for c in self.columns)


def table_names() -> list[str]:
    """Parents before children (foreign keys), as the models declare them."""
    return [t.name for t in Base.metadata.sorted_tables]


def _target_columns(pg: psycopg.Connection, table: str) -> list[tuple[str, str]]:
    return pg.execute(
        "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum",
        (table,),
    ).fetchall()


def _primary_key(pg: psycopg.Connection, table: str) -> list[str]:
    rows = pg.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
        "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = %s::regclass AND i.indisprimary",
        (table,),
    ).fetchall()
    return [r[0] for r in rows]


def table_specs(pg: psycopg.Connection, source: sqlite3.Connection) -> list[TableSpec]:
    specs = []
    for name in table_names():
        target = _target_columns(pg, name)
        if _primary_key(pg, name) != ["id"]:
            raise MigrationError(f"table {name}: expected the single primary key column id")
        have = set(source_columns(source, name))
        if not have:
            raise MigrationError(f"source has no table {name}")
        wanted = [c for c, _ in target]
        missing = [c for c in wanted if c not in have]
        extra = sorted(have - set(wanted))
        if missing or extra:
            raise MigrationError(
                f"table {name}: source and target columns differ "
                f"(missing in source: {missing or '-'}, not in target: {extra or '-'})"
            )
        specs.append(TableSpec(name, tuple(wanted), tuple(t for _, t in target)))
    return specs
