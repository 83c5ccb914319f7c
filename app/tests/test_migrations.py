"""Alembic is the only schema source: up, down to base, up again, on both backends; the
migrated schema matches the models."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from mailhelper import db
from mailhelper.models import Base
from sqlalchemy import inspect

from tests.servers import PostgresServer

TABLES = {
    "users",
    "api_tokens",
    "mail_accounts",
    "folders",
    "messages",
    "job_runs",
    "phase_transitions",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    pg: PostgresServer = request.getfixturevalue("pg")
    return pg.create_database(f"m_{secrets.token_hex(5)}")


def tables(url: str) -> set[str]:
    engine = db.make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(empty_url: str) -> None:
    db.upgrade(empty_url)
    assert tables(empty_url) == TABLES
    db.downgrade(empty_url, "base")
    assert tables(empty_url) == set()
    db.upgrade(empty_url)
    assert tables(empty_url) == TABLES
    engine = db.make_engine(empty_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
        uniques = inspect(engine).get_unique_constraints("messages")
        assert {tuple(u["column_names"]) for u in uniques} == {
            ("account_id", "folder_id", "uidvalidity", "uid")
        }
    finally:
        engine.dispose()


def test_listing_query_uses_the_index(pg_url: str) -> None:
    from sqlalchemy import text

    engine = db.make_engine(pg_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SET enable_seqscan = off"))
            plan = "\n".join(
                row[0]
                for row in conn.execute(
                    text(
                        "EXPLAIN SELECT id FROM messages WHERE account_id = 1 "
                        "ORDER BY internal_date DESC, id DESC LIMIT 50"
                    )
                )
            )
        assert "ix_messages_account_id_internal_date" in plan
        assert "Sort" not in plan
    finally:
        engine.dispose()
