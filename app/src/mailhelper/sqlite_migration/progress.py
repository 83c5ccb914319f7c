"""Progress of the copy: a bar on a terminal (rows per table, rate, ETA), plain log lines
otherwise (one every few seconds and one per finished table)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TextIO

BAR = 24


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Reports one table at a time; `stream` is stderr in the CLI."""

    def __init__(
        self,
        stream: TextIO,
        *,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.interval = 0.2 if self.tty else interval
        self.clock = clock
        self.table = ""
        self.total = 0
        self.done = 0
        self.copied = 0
        self.started = 0.0
        self.last = 0.0
        self._lock = threading.Lock()

    def start(self, table: str, total: int, already: int) -> None:
        self.table, self.total, self.done, self.copied = table, total, already, 0
        self.started = self.last = self.clock()
        if not self.tty:
            state = f", {already:,} already on the target" if already else ""
            self._line(f"{table}: copying {total - already:,} of {total:,} rows{state}")

    def advance(self, rows: int) -> None:
        with self._lock:  # the segments of a table report from their own threads
            self.done += rows
            self.copied += rows
            now = self.clock()
            if now - self.last >= self.interval:
                self.last = now
                self._show(now)

    def finish(self) -> None:
        now = self.clock()
        if self.tty:
            self._show(now)
            self.stream.write("\n")
            self.stream.flush()
        else:
            elapsed = now - self.started
            rate = self.copied / elapsed if elapsed > 0 else 0.0
            self._line(
                f"{self.table}: {self.done:,}/{self.total:,} rows, {self.copied:,} copied "
                f"in {elapsed:.1f} s ({rate:,.0f} rows/s)"
            )

    def _show(self, now: float) -> None:
        elapsed = now - self.started
        rate = self.copied / elapsed if elapsed > 0 else 0.0
        left = max(0, self.total - self.done)
        eta = _duration(left / rate) if rate > 0 else "?"
        share = self.done / self.total if self.total else 1.0
        if self.tty:
            filled = int(share * BAR)
            bar = "#" * filled + "-" * (BAR - filled)
            self.stream.write(
                f"\r{self.table:<14} [{bar}] {self.done:,}/{self.total:,} "
                f"{rate:,.0f} rows/s ETA {eta}   "
            )
            self.stream.flush()
        else:
            self._line(
                f"{self.table}: {self.done:,}/{self.total:,} rows ({share:.0%}), "
                f"{rate:,.0f} rows/s, ETA {eta}"
            )

    def note(self, message: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
        self._line(message)

    def _line(self, message: str) -> None:
        self.stream.write(f"migrate-sqlite: {message}\n")
        self.stream.flush()
