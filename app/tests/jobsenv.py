"""Helpers for the jobs tests: real `mailhelper worker` processes and job polling."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mailhelper.models import JobRun
from mailhelper.runtime import Runtime

MAILHELPER = str(Path(sys.executable).parent / "mailhelper")
TESTS_ROOT = Path(__file__).resolve().parent.parent  # app/: `tests.*` importable from here


COVERAGE_VARIABLES = ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")


def coverage_env() -> dict[str, str]:
    """What makes a Python child process measure its coverage (set by coverage's
    `patch = subprocess` in the test run, absent otherwise, e.g. in the benchmark)."""
    return {k: os.environ[k] for k in COVERAGE_VARIABLES if k in os.environ}


def process_env(env: dict[str, str]) -> dict[str, str]:
    """A clean environment for a child process: PATH plus exactly `env` (and the coverage
    variables, which change nothing but the measurement)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(TESTS_ROOT),
        **coverage_env(),
        **env,
    }


class Worker:
    """`mailhelper worker` in its own process group, log in a file, ready when it says so."""

    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        *,
        name: str = "w1",
        concurrency: int = 1,
        extra: tuple[str, ...] = (),
        command: tuple[str, ...] = ("worker",),
    ) -> None:
        self.env = process_env(env)
        self.name = name
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        self.argv = [
            MAILHELPER,
            *command,
            *(
                [f"--concurrency={concurrency}", f"--hostname={name}@%h", "--loglevel=INFO"]
                if command == ("worker",)
                else []
            ),
            *extra,
        ]
        self.proc: subprocess.Popen | None = None

    def start(self, *, wait_for: str | None = "ready.", timeout: float = 60) -> Worker:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.log_path.parent,
        )
        log.close()
        if wait_for:
            self.wait_log(wait_for, timeout)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[1]} exited {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.1)
        raise TimeoutError(f"no {text!r} in the log after {timeout} s:\n{self.log()[-3000:]}")

    def pids(self) -> list[int]:
        """The main process and its pool processes."""
        assert self.proc is not None
        pids = [self.proc.pid]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    stat = (entry / "stat").read_text()
                    ppid = int(stat.rsplit(")", 1)[1].split()[1])
                    if ppid == self.proc.pid:
                        pids.append(int(entry.name))
        return pids

    def kill(self) -> None:
        """SIGKILL to the whole process group: no warm shutdown, no ack, no requeue."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()


def wait_job(rt: Runtime, job_id: int, statuses: tuple[str, ...], timeout: float = 120) -> JobRun:
    deadline = time.monotonic() + timeout
    job = None
    while time.monotonic() < deadline:
        with rt.sessions() as session:
            job = session.get(JobRun, job_id)
            if job is not None and job.status in statuses:
                return job
        time.sleep(0.05)
    status = None if job is None else (job.status, job.attempts, job.error)
    raise TimeoutError(f"job {job_id} not in {statuses} after {timeout} s: {status}")


def wait_until(predicate, timeout: float = 120, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"condition not met after {timeout} s")
