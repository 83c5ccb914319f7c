"""Per-account mutual exclusion for syncs: a thread lock in-process, plus a PostgreSQL
advisory lock across processes and hosts (SQLite deployments are single-host)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from sqlalchemy import Engine, text

from mailhelper.errors import SyncBusyError

_ADVISORY_NAMESPACE = 0x6D68  # "mh"
_local_locks: dict[int, threading.Lock] = {}
_guard = threading.Lock()


def _thread_lock(account_id: int) -> threading.Lock:
    with _guard:
        return _local_locks.setdefault(account_id, threading.Lock())


@contextlib.contextmanager
def account_lock(engine: Engine, account_id: int, timeout: float) -> Iterator[None]:
    """Hold the sync lock of one account; SyncBusyError when it is not free within `timeout`."""
    deadline = time.monotonic() + timeout
    lock = _thread_lock(account_id)
    if not lock.acquire(timeout=timeout):
        raise SyncBusyError(f"another sync of account {account_id} is still running")
    try:
        if engine.dialect.name != "postgresql":
            yield
            return
        with engine.connect() as conn:
            while True:
                got = conn.execute(
                    text("SELECT pg_try_advisory_lock(:ns, :id)"),
                    {"ns": _ADVISORY_NAMESPACE, "id": account_id},
                ).scalar()
                conn.commit()
                if got:
                    break
                if time.monotonic() >= deadline:
                    raise SyncBusyError(f"another process is syncing account {account_id}")
                time.sleep(0.1)
            try:
                yield
            finally:
                conn.execute(
                    text("SELECT pg_advisory_unlock(:ns, :id)"),
                    {"ns": _ADVISORY_NAMESPACE, "id": account_id},
                )
                conn.commit()
    finally:
        lock.release()
