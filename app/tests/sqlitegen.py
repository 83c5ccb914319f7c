"""A large legacy SQLite database made fast: schema by Alembic, rows by plain sqlite3.

Rows look like the app's (users with wrapped keys, accounts and messages with
encrypted-looking BLOBs: format byte, nonce, random ciphertext). Nothing here decrypts;
for data the app can read back see `legacy_fixture.py`. Used by the interrupted-copy test
and by `bench/bench_migrate.py`.
"""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
from pathlib import Path

from mailhelper import db

FORMAT_V1 = b"\x01"


def _blob(rng: random.Random, size: int) -> bytes:
    return FORMAT_V1 + rng.randbytes(12 + size + 16)


def _ts(base: dt.datetime, seconds: int) -> str:
    return (base + dt.timedelta(seconds=seconds, microseconds=seconds % 997)).strftime(
        "%Y-%m-%d %H:%M:%S.%f"
    )


def generate(
    path: Path,
    *,
    messages: int,
    blob_bytes: int = 4096,
    users: int = 4,
    accounts_per_user: int = 2,
    job_runs: int = 1000,
    seed: int = 8,
) -> Path:
    """Create `path` at the schema head with the given number of messages."""
    db.upgrade(f"sqlite:///{path}")
    rng = random.Random(seed)
    base = dt.datetime(2025, 1, 1)  # naive UTC, as SQLAlchemy stores it in SQLite
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        with conn:
            conn.executemany(
                "INSERT INTO users (id, email, password_hash, key_id, wrapped_key, created_at,"
                " failed_logins, locked_until) VALUES (?, ?, ?, ?, ?, ?, 0, NULL)",
                [
                    (
                        u,
                        f"user{u}@example.org",
                        "scrypt:32768:8:1$x$y",
                        f"{u:032x}",
                        f"local:v1:{rng.randbytes(60).hex()}",
                        _ts(base, u),
                    )
                    for u in range(1, users + 1)
                ],
            )
            accounts = [
                (a, (a - 1) // accounts_per_user + 1)
                for a in range(1, users * accounts_per_user + 1)
            ]
            conn.executemany(
                "INSERT INTO mail_accounts (id, user_id, host_enc, port_enc, tls_mode_enc,"
                " username_enc, password_enc, sync_enabled, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (a, u, *(_blob(rng, 20) for _ in range(5)), a % 2, _ts(base, a))
                    for a, u in accounts
                ],
            )
            conn.executemany(
                "INSERT INTO folders (id, account_id, name, uidvalidity, uidnext,"
                " highestmodseq, last_seen_uid, message_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(a, a, "INBOX", 4_000_000_000 + a, 1, None, 0, 0) for a, _ in accounts],
            )
            n_acc = len(accounts)

            def message_rows(start: int, stop: int) -> list[tuple[object, ...]]:
                return [
                    (
                        i,
                        i % n_acc + 1,
                        i % n_acc + 1,
                        4_000_000_000 + i % n_acc + 1,
                        i,
                        "\\Seen" if i % 3 else "",
                        _ts(base, i * 60),
                        blob_bytes,
                        f"<{i}@example.org>",
                        _blob(rng, 30),
                        _blob(rng, 60),
                        _blob(rng, blob_bytes),
                        _ts(base, i * 60 + 5),
                    )
                    for i in range(start, stop)
                ]

            for start in range(1, messages + 1, 5000):
                conn.executemany(
                    "INSERT INTO messages (id, account_id, folder_id, uidvalidity, uid, flags,"
                    " internal_date, size, message_id, sender_enc, subject_enc, raw_enc,"
                    " fetched_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    message_rows(start, min(messages + 1, start + 5000)),
                )
            conn.executemany(
                "INSERT INTO job_runs (id, kind, backend, status, attempts, user_id, account_id,"
                " enqueued_at, started_at, finished_at, error) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        j,
                        "sync_user_emails",
                        "legacy" if j % 2 else "celery",
                        "success" if j % 7 else "failed",
                        1,
                        (j % n_acc) // accounts_per_user + 1,
                        j % n_acc + 1,
                        _ts(base, j),
                        _ts(base, j + 1),
                        _ts(base, j + 2),
                        None if j % 7 else "TransientSyncError: timeout",
                    )
                    for j in range(1, job_runs + 1)
                ],
            )
    finally:
        conn.close()
    return path
