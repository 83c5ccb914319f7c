"""A load generator for the phase walk: sync requests and API reads against every app
host, in threads, recording every response and every accepted job.

Sync requests are closed-loop, as a user's are: a client asks for its next sync once the
previous one has finished (it polls the job meanwhile). Open-loop syncs at a fixed rate
outran the one test worker on a busy machine, and the queue then grew without bound."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import requests

TERMINAL = ("success", "failed", "expired")


@dataclass
class Client:
    """One user: its token and account."""

    token: str
    account: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Load:
    app_urls: list[str]
    clients: list[Client]
    sync_interval: float = 0.5  # seconds between sync requests per thread
    read_interval: float = 0.25
    results: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    jobs: list[tuple[Client, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        self._threads = [
            threading.Thread(target=self._loop, args=(kind,), daemon=True, name=f"load-{kind}")
            for kind in ("sync", "read", "read")
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _loop(self, kind: str) -> None:
        targets = itertools.cycle(
            [(url, client) for url in self.app_urls for client in self.clients]
        )
        interval = self.sync_interval if kind == "sync" else self.read_interval
        outstanding: dict[int, int] = {}  # client's account -> its unfinished job
        while not self._stop.is_set():
            url, client = next(targets)
            try:
                if kind == "sync" and client.account in outstanding:
                    kind_done = "poll"
                    resp = requests.get(
                        f"{url}/api/v1/jobs/{outstanding[client.account]}",
                        headers=client.headers,
                        timeout=30,
                    )
                    ok = resp.status_code == 200
                    if ok and resp.json()["status"] in TERMINAL:
                        outstanding.pop(client.account)
                elif kind == "sync":
                    kind_done = "sync"
                    resp = requests.post(
                        f"{url}/api/v1/accounts/{client.account}/sync",
                        headers=client.headers,
                        timeout=30,
                    )
                    ok = resp.status_code == 202
                    if ok:
                        outstanding[client.account] = resp.json()["job"]["id"]
                        with self._lock:
                            self.jobs.append((client, outstanding[client.account]))
                else:
                    kind_done = "read"
                    resp = requests.get(
                        f"{url}/api/v1/accounts/{client.account}/messages",
                        headers=client.headers,
                        timeout=30,
                    )
                    ok = resp.status_code == 200
                outcome = f"{kind_done} {resp.status_code}"
                if not ok:
                    self.failures.append(f"{time.strftime('%X')} {url} {outcome} {resp.text[:200]}")
            except requests.RequestException as exc:
                outcome = f"{kind} error"
                self.failures.append(
                    f"{time.strftime('%X')} {url} {kind} {type(exc).__name__}: {exc}"
                )
            with self._lock:
                self.results[outcome] += 1
            self._stop.wait(interval)

    def unfinished_jobs(self, app_url: str, timeout: float) -> dict[int, str]:
        """Wait until every accepted job has finished; return those that did not succeed."""
        deadline = time.monotonic() + timeout
        pending = dict((job, client) for client, job in self.jobs)
        bad: dict[int, str] = {}
        while pending and time.monotonic() < deadline:
            for job, client in list(pending.items()):
                state = requests.get(
                    f"{app_url}/api/v1/jobs/{job}", headers=client.headers, timeout=30
                ).json()
                if state["status"] == "success":
                    pending.pop(job)
                elif state["status"] in TERMINAL:
                    bad[job] = f"{state['status']}: {state['error']}"
                    pending.pop(job)
            if pending:
                time.sleep(2)
        bad.update({job: "not finished" for job in pending})
        return bad
