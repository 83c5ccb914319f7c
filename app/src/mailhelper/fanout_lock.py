"""Per-account Redis lock of the scheduled fan-out: at most one queued or running scheduled
sync per account.

`sync_all_accounts` takes the lock (SET NX with a timeout) before it queues a job and hands
the token to the task; the task releases it when the job reaches a final state, success or
failure, and extends it on a retry. A lost job cannot block its account for longer than the
timeout (`JobSettings.account_lock_ttl`).
"""

from __future__ import annotations

import redis

_PREFIX = "mailhelper:fanout-lock:account:"
# delete / extend only when the lock still holds our token (compare-and-act in one step)
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
_EXTEND = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)


def key(account_id: int) -> str:
    return f"{_PREFIX}{account_id}"


def acquire(client: redis.Redis, account_id: int, token: str, ttl: float) -> bool:
    return bool(client.set(key(account_id), token, nx=True, px=int(ttl * 1000)))


def release(client: redis.Redis, account_id: int, token: str) -> bool:
    return bool(client.eval(_RELEASE, 1, key(account_id), token))


def extend(client: redis.Redis, account_id: int, token: str, ttl: float) -> bool:
    return bool(client.eval(_EXTEND, 1, key(account_id), token, int(ttl * 1000)))


def holder(client: redis.Redis, account_id: int) -> str | None:
    value = client.get(key(account_id))
    return value.decode() if isinstance(value, bytes) else value
