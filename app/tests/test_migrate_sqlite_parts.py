"""Parts of migrate-sqlite that need no server: progress output, URL masking, encoding."""

from __future__ import annotations

import hashlib
import io
import logging
import sqlite3
import struct
from pathlib import Path

import pytest
from mailhelper.sqlite_migration import segments
from mailhelper.sqlite_migration.encoding import ENCODERS
from mailhelper.sqlite_migration.errors import MigrationError
from mailhelper.sqlite_migration.progress import Progress
from mailhelper.sqlite_migration.target_url import RedactingFilter, Redactor, parse_target


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_bar_on_a_terminal() -> None:
    out, clock = Terminal(), Clock()
    p = Progress(out, clock=clock)
    p.start("messages", 10_000, 2_000)
    clock.now += 2
    p.advance(4_000)  # 4,000 rows in 2 s; 4,000 left: ETA 2 s
    text = out.getvalue()
    assert text.startswith("\rmessages")
    assert "[##############----------]" in text
    assert "6,000/10,000" in text
    assert "2,000 rows/s" in text
    assert "ETA 0:02" in text
    p.note("rebuilding")
    p.finish()
    assert "\x1b[K" in out.getvalue()
    assert out.getvalue().endswith("\n")


def test_progress_lines_without_a_terminal() -> None:
    out, clock = io.StringIO(), Clock()
    p = Progress(out, clock=clock, interval=5)
    p.start("job_runs", 3_600 * 1_000, 0)
    clock.now += 1
    p.advance(100)  # before the interval: nothing
    clock.now += 5
    p.advance(500)
    p.finish()
    lines = out.getvalue().splitlines()
    assert lines[0] == "migrate-sqlite: job_runs: copying 3,600,000 of 3,600,000 rows"
    assert lines[1].startswith("migrate-sqlite: job_runs: 600/3,600,000 rows (0%), 100 rows/s")
    assert lines[1].endswith("ETA 9:59:54")
    assert "\r" not in out.getvalue()
    assert lines[2].startswith("migrate-sqlite: job_runs: 600/3,600,000 rows, 600 copied in 6.0 s")


def test_target_url_forms_and_masking() -> None:
    t = parse_target("postgres://mig:s%40cr%3At@db.example:5433/mh?sslmode=require")
    assert t.display == "postgres://mig:***@db.example:5433/mh?sslmode=require"
    assert t.libpq == "postgresql://mig:s%40cr%3At@db.example:5433/mh?sslmode=require"
    assert t.sqlalchemy.startswith("postgresql+psycopg://mig:")
    assert "s@cr:t" in t.secrets
    assert "s%40cr%3At" in t.secrets
    assert "s@cr:t" not in repr(t)
    redact = Redactor(t.secrets)
    assert redact("failed for s@cr:t and s%40cr%3At") == "failed for *** and ***"
    bare = parse_target("postgresql:///?service=mh")
    assert bare.libpq == "postgresql:///?service=mh"
    assert bare.display == "postgresql:///?service=mh"
    assert bare.secrets == ()
    query = parse_target("postgresql://u@h/d?password=pw1&sslmode=disable")
    assert query.display == "postgresql://u@h/d?password=***&sslmode=disable"
    with pytest.raises(MigrationError, match="postgresql://"):
        parse_target("sqlite:///x.db")


def test_log_records_are_redacted() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "connect %s", ("pw-123",), None)
    try:
        raise RuntimeError("boom pw-123")
    except RuntimeError as exc:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    assert RedactingFilter(Redactor(("pw-123",))).filter(record)
    assert record.getMessage() == "connect ***"
    assert "boom ***" in (record.exc_text or "")
    assert "pw-123" not in (record.exc_text or "")


def test_encoders_match_postgresql_binary_forms() -> None:
    assert ENCODERS["int2"](-2) == struct.pack(">h", -2)
    assert ENCODERS["float8"](1) == struct.pack(">d", 1.0)
    assert ENCODERS["text"](7) == b"7"
    assert ENCODERS["date"](b"2000-01-02") == struct.pack(">i", 1)
    aware = ENCODERS["timestamp"](b"2000-01-01T01:00:00+01:00")
    assert aware == struct.pack(">q", 0)
    assert ENCODERS["timestamptz"](b"2000-01-01 00:00:01") == struct.pack(">q", 1_000_000)
    for kind, value in [("int4", 2**31), ("float8", b"x"), ("text", 1.5j), ("timestamptz", 5)]:
        with pytest.raises(MigrationError):
            ENCODERS[kind](value)


def test_segments_cover_every_id_and_split_at_the_middle_row(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i * 3,) for i in range(1, 20_001)])
        small = segments.split(conn, "t", 9_999)
        assert small == [segments.WHOLE]
        assert small[0].where() == "TRUE"
        halves = segments.split(conn, "t", 20_000)
        assert halves == [segments.Segment(None, 30_003), segments.Segment(30_003, None)]
        counts = [
            conn.execute(f"SELECT count(*) FROM t WHERE {s.where()}").fetchone()[0]  # noqa: S608
            for s in halves
        ]
        assert counts == [10_000, 10_000]
        assert halves[1].where(after=40_000) == "id > 40000 AND id >= 30003"
        assert (
            conn.execute(
                f"SELECT count(*) FROM t WHERE {halves[1].where(after=40_000)}"  # noqa: S608
            ).fetchone()[0]
            == 20_000 - 40_000 // 3
        )
    one, two = "ab" * 32, "cd" * 32
    assert segments.combine([one]) == one
    assert segments.combine([one, two]) == hashlib.sha256(bytes.fromhex(one + two)).hexdigest()
    assert segments.combine([one, two]) != segments.combine([two, one])
