"""Fixtures of the stack scenario: one multi-host stack per session, deployed by site.yml."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from stacklib import TIMINGS, USERS, Api, Stack, run_playbook

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    st = Stack.from_env()
    reuse = os.environ.get("KIMH_STACK_REUSE") == "1" and st.is_up()
    if not reuse:
        start = time.monotonic()
        up = run_playbook("tests/stack/stack_up.yml", log="stack-up")
        TIMINGS["containers up"] = time.monotonic() - start
        assert up.returncode == 0, f"the stack's containers did not come up:\n{up.tail()}"
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


@pytest.fixture(scope="session")
def synced(deployed: Stack) -> dict[str, dict[str, Any]]:
    """Both users created, an account each added through app1, synced by the worker. On a
    reused stack (KIMH_STACK_REUSE=1) the users and accounts of the last run are taken."""
    out: dict[str, dict[str, Any]] = {}
    reuse = os.environ.get("KIMH_STACK_REUSE") == "1"
    for user in USERS:
        email, password = f"{user}@example.org", f"stack-test-{user}-pw"
        # on a reused stack the user exists already: that failure is expected
        deployed.exec(
            "app1",
            ["/usr/local/sbin/mail-helper-admin", "create-user", "--email", email],
            stdin=f"{password}\n{password}\n",
            check=not reuse,
        )
        token = requests.post(
            deployed.app_url("app1", "/api/v1/auth/token"),
            json={"email": email, "password": password},
            timeout=30,
        )
        assert token.status_code == 201, token.text
        # The second app host serves the same users (shared database and Vault).
        api = Api(deployed.app_url("app2", "/api/v1"), token.json()["token"])
        existing = api.get("/accounts").json()["accounts"] if reuse else []
        if existing:
            account_id = existing[0]["id"]
            job = api.post(f"/accounts/{account_id}/sync")
            out[user] = {"api": api, "account": account_id, "job": job.json()["job"]}
            continue
        account = api.post(
            "/accounts",
            {
                "host": "imap1",
                "port": 993,
                "tls": "implicit",
                "username": user,
                "password": deployed.imap_password(user),
            },
        )
        assert account.status_code == 201, account.text
        job = api.post(f"/accounts/{account.json()['id']}/sync")
        assert job.status_code == 202, job.text
        out[user] = {"api": api, "account": account.json()["id"], "job": job.json()["job"]}
    deadline = time.monotonic() + 180
    for user in USERS:
        while True:
            state = out[user]["api"].get(f"/jobs/{out[user]['job']['id']}").json()
            if state["status"] in ("success", "failed", "expired") or time.monotonic() > deadline:
                break
            time.sleep(1)
        out[user]["final"] = state
    return out


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("stack timings (seconds)")
    for name, seconds in TIMINGS.items():
        terminalreporter.write_line(f"{name:<40} {seconds:8.1f}")
    out = ROOT / "tests" / ".results" / "stack-timings.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(TIMINGS, indent=2))
