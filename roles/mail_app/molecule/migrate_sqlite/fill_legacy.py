"""Rows like the app's in a legacy SQLite database (the users exist already, made by the
app's CLI): per user an account, a folder, messages with 4 KB encrypted-looking BLOBs
and Unicode metadata, and job runs. Usage: fill_legacy.py DB MESSAGES"""

import datetime as dt
import random
import sqlite3
import sys


def blob(rng: random.Random, size: int) -> bytes:
    return b"\x01" + rng.randbytes(12 + size + 16)


def ts(seconds: int) -> str:
    base = dt.datetime(2025, 1, 1)
    return (base + dt.timedelta(seconds=seconds, microseconds=seconds % 997)).strftime(
        "%Y-%m-%d %H:%M:%S.%f"
    )


def main() -> None:
    path, count = sys.argv[1], int(sys.argv[2])
    rng = random.Random(8)  # noqa: S311 - test data, not secrets
    conn = sqlite3.connect(path, timeout=30)
    with conn:
        users = [r[0] for r in conn.execute("SELECT id FROM users ORDER BY id")]
        for n, user in enumerate(users, start=1):
            cur = conn.execute(
                "INSERT INTO mail_accounts (user_id, host_enc, port_enc, tls_mode_enc,"
                " username_enc, password_enc, sync_enabled, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
                (user, *(blob(rng, 20) for _ in range(5)), ts(n)),
            )
            account = cur.lastrowid
            cur = conn.execute(
                "INSERT INTO folders (account_id, name, uidvalidity, uidnext, highestmodseq,"
                " last_seen_uid, message_count) VALUES (?, ?, ?, 1, NULL, 0, 0)",
                (account, "INBOX/Entwürfe ✉", 4_000_000_000 + n),
            )
            folder = cur.lastrowid
            conn.executemany(
                "INSERT INTO messages (account_id, folder_id, uidvalidity, uid, flags,"
                " internal_date, size, message_id, sender_enc, subject_enc, raw_enc,"
                " fetched_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        account,
                        folder,
                        4_000_000_000 + n,
                        i,
                        "\\Seen" if i % 3 else "",
                        ts(i * 60),
                        4096,
                        f"<{i}.{n}.ünïcødé-😀@example.org>",
                        blob(rng, 30),
                        blob(rng, 60),
                        blob(rng, 4096),
                        ts(i * 60 + 5),
                    )
                    for i in range(1, count // len(users) + 1)
                ],
            )
            conn.executemany(
                "INSERT INTO job_runs (kind, backend, status, attempts, user_id, account_id,"
                " enqueued_at, started_at, finished_at, error)"
                " VALUES ('sync_user_emails', 'legacy', ?, 1, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        "success" if j % 7 else "failed",
                        user,
                        account,
                        ts(j),
                        ts(j + 1),
                        ts(j + 2),
                        None if j % 7 else "TransientSyncError: timeout",
                    )
                    for j in range(1, 51)
                ],
            )
    conn.close()


if __name__ == "__main__":
    main()
