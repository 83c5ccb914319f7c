"""SQLite -> PostgreSQL migration of an existing installation (`mailhelper migrate-sqlite`).

The target schema always comes from Alembic; the SQLite file only supplies rows. Rows are
copied table by table in dependency order and primary-key order, in committed batches of
binary COPY, so an interrupted run resumes after the last committed batch. Content stays
encrypted: the tool moves bytes and never needs a data key or a key provider.
"""

from __future__ import annotations

from mailhelper.sqlite_migration.errors import (
    MigrationError,
    SourceRevisionError,
    TargetNotEmptyError,
)
from mailhelper.sqlite_migration.runner import MigrationOptions, run_migration

__all__ = [
    "MigrationError",
    "MigrationOptions",
    "SourceRevisionError",
    "TargetNotEmptyError",
    "run_migration",
]
