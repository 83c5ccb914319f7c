"""Fixtures of the stack scenario: one multi-host stack per session, deployed by site.yml."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stacklib import TIMINGS, Stack, run_playbook

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    st = Stack.from_env()
    reuse = os.environ.get("KIMH_STACK_REUSE") == "1" and st.is_up()
    if not reuse:
        start = time.monotonic()
        run_playbook("tests/stack/stack_up.yml")
        TIMINGS["containers up"] = time.monotonic() - start
    yield st
    if os.environ.get("KIMH_STACK_KEEP") != "1":
        run_playbook("tests/stack/stack_down.yml")


@pytest.fixture(scope="session")
def deployed(stack: Stack) -> Stack:
    """The stack after a successful site.yml (run once per session)."""
    if os.environ.get("KIMH_STACK_REUSE") == "1" and stack.app_healthy("app1"):
        return stack
    start = time.monotonic()
    result = run_playbook("playbooks/site.yml", log="site-cold")
    TIMINGS["site.yml cold"] = time.monotonic() - start
    assert result.returncode == 0, result.tail()
    return stack


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("stack timings (seconds)")
    for name, seconds in TIMINGS.items():
        terminalreporter.write_line(f"{name:<40} {seconds:8.1f}")
    out = ROOT / ".cache" / "test-results" / "stack-timings.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(TIMINGS, indent=2))
