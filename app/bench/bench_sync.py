#!/usr/bin/env python3
"""Sync benchmark (not a test): a 5,000-message Maildir in a private Dovecot, synced into a
private PostgreSQL with real encryption (local key file by default, --vault for OpenBao).

Prints messages/s of the cold sync and the seconds of an incremental no-change sync.
Starts and stops its own servers with the test fixtures' code.

    .venv-app/bin/python app/bench/bench_sync.py [--messages 5000] [--avg-kb 35] [--vault]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import secrets
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

APP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(APP))

from mailhelper import db  # noqa: E402
from mailhelper.accounts import add_account  # noqa: E402
from mailhelper.config import load_settings  # noqa: E402
from mailhelper.runtime import build_runtime  # noqa: E402
from mailhelper.users import create_user  # noqa: E402
from tests.mailgen import message  # noqa: E402
from tests.servers import BaoServer, DovecotServer, PostgresServer  # noqa: E402


def rss_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class RssSampler:
    """Peak resident memory while a block runs (sampled every 20 ms)."""

    def __init__(self) -> None:
        self.before = self.peak = 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_kb())

    def __enter__(self) -> RssSampler:
        gc.collect()
        self.before = self.peak = rss_kb()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def sizes(n: int, avg: int, rng: random.Random) -> list[int]:
    """Mixed sizes: many small, some medium, a few large; mean close to `avg`."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.6:
            out.append(rng.randint(2_000, 12_000))
        elif r < 0.9:
            out.append(rng.randint(20_000, 80_000))
        else:
            out.append(rng.randint(100_000, 220_000))
    scale = avg / (sum(out) / n)
    return [max(800, int(s * scale)) for s in out]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--avg-kb", type=float, default=35.0)
    ap.add_argument("--folders", type=int, default=3)
    ap.add_argument("--vault", action="store_true", help="OpenBao Transit instead of a key file")
    ap.add_argument("--tls", choices=["implicit", "starttls", "none"], default="implicit")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    rng = random.Random(42)
    pg = PostgresServer(durable=True).start()
    dovecot = DovecotServer().start()
    bao = BaoServer().start() if args.vault else None
    tmp = Path(tempfile.mkdtemp(prefix="mh-bench-"))
    try:
        imap_user, imap_pw = dovecot.add_user()
        plan = sizes(args.messages, int(args.avg_kb * 1024), rng)
        per_folder = (len(plan) + args.folders - 1) // args.folders
        total_bytes = 0
        for f in range(args.folders):
            chunk = plan[f * per_folder : (f + 1) * per_folder]
            msgs = []
            for i, size in enumerate(chunk):
                raw = message(f * per_folder + i, size, rng=rng)
                total_bytes += len(raw)
                msgs.append((raw, rng.choice(["", "S", "S", "FS", "RS"])))
            dovecot.write_maildir(imap_user, msgs, folder="INBOX" if f == 0 else f"Folder{f}")
            del msgs
        dburl = pg.create_database("bench")
        db.upgrade(dburl)
        env = {
            "HOME": str(tmp),
            "MAILHELPER_DATA_DIR": str(tmp / "data"),
            "DATABASE_URL": dburl,
            "MAILHELPER_IMAP_CA_FILE": str(dovecot.ca_file),
        }
        if bao is not None:
            env.update(
                {
                    "MAILHELPER_KEY_PROVIDER": "vault",
                    "VAULT_ADDR": bao.addr,
                    "CREDENTIALS_DIRECTORY": str(bao.credentials_dir()),
                }
            )
        rt = build_runtime(load_settings(env))
        with rt.sessions() as s:
            user = create_user(s, rt.ciphers, "bench@example.org", secrets.token_urlsafe(16))
            account = add_account(
                s,
                rt.ciphers,
                user,
                host="localhost",
                port=dovecot.imaps_port if args.tls == "implicit" else dovecot.imap_port,
                tls_mode=args.tls,
                username=imap_user,
                password=imap_pw,
            )
            account_id = account.id
        # let Dovecot build its index first, as on any mailbox that has been used
        warm_t = time.perf_counter()
        from imapclient import IMAPClient

        with IMAPClient("127.0.0.1", port=dovecot.imap_port, ssl=False) as c:
            c.login(imap_user, imap_pw)
            for _flags, _d, name in c.list_folders():
                c.select_folder(name, readonly=True)
                c.search("ALL")
        warm = time.perf_counter() - warm_t

        sampler = RssSampler()
        load_before = os.getloadavg()[0]
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        with sampler:
            cold = rt.sync.sync_account(account_id)
        cold_s = time.perf_counter() - t0
        cold_cpu = time.process_time() - cpu0
        nochange = []
        for _ in range(5):
            t0 = time.perf_counter()
            r = rt.sync.sync_account(account_id)
            nochange.append(time.perf_counter() - t0)
            if r.new:
                raise RuntimeError(f"a no-change sync stored {r.new} messages")
        # flags changed on 50 messages: the incremental sync must pick exactly those up
        with IMAPClient("127.0.0.1", port=dovecot.imap_port, ssl=False) as c:
            c.login(imap_user, imap_pw)
            c.select_folder("INBOX")
            uids = c.search("ALL")[:50]
            c.add_flags(uids, [b"$Bench"])
        t0 = time.perf_counter()
        flagged = rt.sync.sync_account(account_id)
        flag_s = time.perf_counter() - t0
        rt.close()
        result = {
            "messages": cold.new,
            "bytes": total_bytes,
            "avg_kb": round(total_bytes / args.messages / 1024, 1),
            "key_provider": "vault" if bao else "local",
            "imap_tls": args.tls,
            "dovecot_index_warmup_s": round(warm, 3),
            "cold_s": round(cold_s, 3),
            "cold_msgs_per_s": round(cold.new / cold_s, 1),
            "cold_mb_per_s": round(total_bytes / cold_s / 1e6, 1),
            "cold_client_cpu_ms_per_msg": round(cold_cpu * 1000 / max(cold.new, 1), 3),
            "load_avg_1min_before": round(load_before, 2),
            "nochange_s_best": round(min(nochange), 4),
            "nochange_s_median": round(sorted(nochange)[2], 4),
            "flag_change_sync_s": round(flag_s, 4),
            "flag_change_updated": flagged.flags_updated,
            "rss_before_sync_mb": round(sampler.before / 1024, 1),
            "rss_peak_during_sync_mb": round(sampler.peak / 1024, 1),
        }
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            for k, v in result.items():
                print(f"{k:>24}: {v}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if bao is not None:
            bao.stop()
        dovecot.stop()
        pg.stop()


if __name__ == "__main__":
    sys.exit(main())
