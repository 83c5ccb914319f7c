"""The SQLite source: opened read-only, checked against the schema revision the app expects."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from mailhelper.db import alembic_config
from mailhelper.sqlite_migration.errors import MigrationError, SourceRevisionError


def expected_revision() -> str:
    """The Alembic head of this version of the app."""
    from alembic.script import ScriptDirectory  # only migrate-sqlite needs Alembic

    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise MigrationError("no Alembic revisions found in the package")
    return head


def open_source(path: Path) -> sqlite3.Connection:
    """A read-only connection that returns TEXT as raw bytes (validated when encoded)."""
    if not path.is_file():
        raise MigrationError(f"source {path}: no such file")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    conn.text_factory = bytes
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise MigrationError(f"source {path} is not an SQLite database: {exc}") from None
    return conn


def source_revision(conn: sqlite3.Connection) -> str | None:
    try:
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.OperationalError:
        return None
    return ",".join(sorted(r[0].decode() for r in rows)) or None


def check_revision(conn: sqlite3.Connection, path: Path) -> str:
    """The source's revision; SourceRevisionError naming found and expected otherwise."""
    expected = expected_revision()
    found = source_revision(conn)
    if found == expected:
        return found
    what = f"revision {found}" if found else "no Alembic revision (no alembic_version row)"
    raise SourceRevisionError(
        f"source {path} is at schema {what}; this mailhelper expects revision {expected}. "
        f"Bring the file to {expected} first (DATABASE_URL=sqlite:///{path} mailhelper db "
        "upgrade, with the mailhelper version that wrote it stopped), then migrate."
    )


def source_columns(conn: sqlite3.Connection, table: str) -> list[str]:
    rows = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
    return [r[1].decode() if isinstance(r[1], bytes) else r[1] for r in rows]
