#!/usr/bin/env python3
"""Run every test suite of the bundle and print one summary.

Suites are discovered, not listed: lint, the controller-side tests in `tests/unit`, the
app's pytest suite (when `app/pyproject.toml` exists), `molecule test` for every
`roles/*/molecule/<scenario>`, and the stack scenarios behind `tests/stack/run.sh`.

The quick suites (lint, unit) run one after another; the app suite and the container
suites (molecule scenarios and the stack) then run `--jobs` at a time (default 2, env
KIMH_TEST_JOBS), longest first, each with its output in tests/.results/<suite>.log,
printed when it ends.

A suite that writes a JUnit file (pytest, testinfra through molecule) contributes its test
counts; any other suite counts as one test. The last line reads `tests: N passed, M failed`.
The exit status is non-zero when anything failed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "tests" / ".results"
VENV_BIN = ROOT / ".venv" / "bin"
# Container names are global to the Docker engine: tag them with the checkout, so that two
# clones (CI beside a developer's tree) can run the same scenario at once.
CHECKOUT_TAG = hashlib.sha256(str(ROOT).encode()).hexdigest()[:6]
# Rough wall times of the scenarios on a quiet 2-core machine, to start the longest first.
EXPECTED_SECONDS = {"mail_app/default": 360.0, "mail_app/migrate_sqlite": 300.0}
PRINT_LOCK = threading.Lock()


@dataclass
class Suite:
    name: str
    argv: list[str]
    cwd: Path = ROOT
    junit: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    heavy: bool = False  # runs containers: may run beside other heavy suites
    expected_seconds: float = 60.0  # for the order (longest first)


@dataclass
class Outcome:
    suite: Suite
    returncode: int
    seconds: float
    passed: int
    failed: int
    skipped: int
    failures: list[str] = field(default_factory=list)


def lint_suites() -> list[Suite]:
    return [
        Suite("lint: yamllint", [str(VENV_BIN / "yamllint"), "--strict", "."]),
        Suite("lint: ansible-lint", [str(VENV_BIN / "ansible-lint"), "--strict"]),
        Suite("lint: ruff check", [str(VENV_BIN / "ruff"), "check", "."]),
        Suite("lint: ruff format", [str(VENV_BIN / "ruff"), "format", "--check", "."]),
    ]


def unit_suites() -> list[Suite]:
    junit = RESULTS / "unit.xml"
    argv = [str(VENV_BIN / "pytest"), "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"]
    return [Suite("unit: controller-side tests", [*argv, "tests/unit"], junit=junit)]


def app_suites() -> list[Suite]:
    runner = ROOT / "tests" / "harness" / "run-app-tests.sh"
    if not (ROOT / "app" / "pyproject.toml").exists() or not runner.exists():
        return []
    junit = RESULTS / "app.xml"
    # Runs beside the container suites: its servers are processes on the controller.
    return [
        Suite(
            "app: pytest",
            [str(runner), f"--junitxml={junit}"],
            junit=junit,
            heavy=True,
            expected_seconds=480.0,
        )
    ]


def molecule_suites(only: set[str]) -> list[Suite]:
    suites = []
    for scenario in sorted(ROOT.glob("roles/*/molecule/*/molecule.yml")):
        role_dir = scenario.parents[2]
        name = scenario.parent.name
        if only and role_dir.name not in only:
            continue
        junit = RESULTS / f"molecule-{role_dir.name}-{name}.xml"
        suites.append(
            Suite(
                f"molecule: {role_dir.name}/{name}",
                [str(VENV_BIN / "molecule"), "test", "-s", name],
                cwd=role_dir,
                junit=junit,
                env={
                    "KIMH_JUNIT_FILE": str(junit),
                    "KIMH_INSTANCE": f"kimh-{role_dir.name}-{name}-{CHECKOUT_TAG}",
                    # apt download cache of this scenario (kept between runs)
                    "KIMH_APT_ARCHIVES": f"/var/cache/kimh-apt/{role_dir.name}-{name}",
                },
                heavy=True,
                expected_seconds=EXPECTED_SECONDS.get(f"{role_dir.name}/{name}", 120.0),
            )
        )
    return suites


def stack_suites() -> list[Suite]:
    runner = ROOT / "tests" / "stack" / "run.sh"
    if not runner.exists():
        return []
    junit = RESULTS / "stack.xml"
    return [
        Suite(
            "stack: scenarios",
            [str(runner), str(junit)],
            junit=junit,
            env={"KIMH_STACK_ID": CHECKOUT_TAG},
            heavy=True,
            expected_seconds=1800.0,
        )
    ]


def count_junit(path: Path) -> tuple[int, int, int]:
    root = ET.parse(path).getroot()  # noqa: S314 -- our own test runners wrote this file
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = failed = skipped = 0
    for s in suites:
        total += int(s.get("tests", 0))
        failed += int(s.get("failures", 0)) + int(s.get("errors", 0))
        skipped += int(s.get("skipped", 0))
    return total - failed - skipped, failed, skipped


def failures_in_junit(path: Path) -> list[str]:
    """`test id: first line of the message` for every failed or erroring test case."""
    root = ET.parse(path).getroot()  # noqa: S314 -- our own test runners wrote this file
    found = []
    for case in root.iter("testcase"):
        for problem in case:
            if problem.tag in ("failure", "error"):
                text = (problem.get("message") or problem.text or "").strip()
                first = text.splitlines()[0][:200] if text else problem.tag
                found.append(f"{case.get('classname')}::{case.get('name')}: {first}")
                break
    return found


def run(suite: Suite, log: Path | None = None) -> Outcome:
    """Run one suite; with `log`, its output goes there and is printed when it ends."""
    if log is None:
        print(f"\n===== {suite.name} =====", flush=True)
    if suite.junit and suite.junit.exists():
        suite.junit.unlink()
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "NO_COLOR": "1",
        "ANSIBLE_NOCOLOR": "1",
        "PY_COLORS": "0",
        **suite.env,
    }
    start = time.monotonic()
    if log is None:
        rc = subprocess.call(suite.argv, cwd=suite.cwd, env=env)
    else:
        with log.open("wb") as out:
            rc = subprocess.call(
                suite.argv, cwd=suite.cwd, env=env, stdout=out, stderr=subprocess.STDOUT
            )
    seconds = time.monotonic() - start
    if log is not None:
        with PRINT_LOCK:
            print(f"\n===== {suite.name} ({seconds:.0f} s, exit {rc}) =====", flush=True)
            sys.stdout.write(log.read_text(errors="replace"))
            sys.stdout.flush()
    passed, failed, skipped = (1, 0, 0) if rc == 0 else (0, 1, 0)
    failures: list[str] = []
    if suite.junit is not None:
        if suite.junit.exists():
            passed, failed, skipped = count_junit(suite.junit)
            failures = failures_in_junit(suite.junit)
            if rc != 0 and failed == 0:
                failed = 1  # the suite failed outside its tests (converge, idempotence, ...)
        elif rc == 0:
            # a pytest-backed suite that wrote no results ran no test: that is a failure
            print(f"{suite.name}: no test results were written", file=sys.stderr)
            passed, failed = 0, 1
    return Outcome(suite, rc, seconds, passed, failed, skipped, failures)


def run_all(suites: list[Suite], jobs: int) -> list[Outcome]:
    light = [s for s in suites if not s.heavy]
    heavy = sorted((s for s in suites if s.heavy), key=lambda s: -s.expected_seconds)
    outcomes = [run(s) for s in light]
    if jobs <= 1:
        return outcomes + [run(s) for s in heavy]
    print(f"\n===== {len(heavy)} container suites, {jobs} at a time =====", flush=True)

    def log_of(suite: Suite) -> Path:
        slug = "".join(c if c.isalnum() else "-" for c in suite.name)
        return RESULTS / f"{slug}.log"

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        done = list(pool.map(lambda s: run(s, log_of(s)), heavy))
    return outcomes + done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--only", choices=["lint", "unit", "app", "roles", "stack"], action="append"
    )
    parser.add_argument("--role", action="append", default=[], help="limit molecule to a role")
    parser.add_argument(
        "--jobs",
        type=int,
        default=int(os.environ.get("KIMH_TEST_JOBS", "2")),
        help="container suites run at once (default 2, env KIMH_TEST_JOBS)",
    )
    args = parser.parse_args()
    groups = set(args.only or ["lint", "unit", "app", "roles", "stack"])

    RESULTS.mkdir(parents=True, exist_ok=True)
    suites: list[Suite] = []
    if "lint" in groups:
        suites += lint_suites()
    if "unit" in groups:
        suites += unit_suites()
    if "app" in groups:
        suites += app_suites()
    if "roles" in groups:
        suites += molecule_suites(set(args.role))
    if "stack" in groups:
        suites += stack_suites()

    outcomes = run_all(suites, args.jobs)

    print("\n===== summary =====")
    for o in outcomes:
        status = "ok" if o.returncode == 0 and o.failed == 0 else "FAILED"
        skipped = f", {o.skipped} skipped" if o.skipped else ""
        print(
            f"{status:6} {o.suite.name:40} {o.seconds:7.1f} s  "
            f"{o.passed} passed, {o.failed} failed{skipped}"
        )
    # The end of the output is what a CI page shows first: name what failed there.
    for o in outcomes:
        if o.returncode or o.failed:
            print(f"\n----- {o.suite.name}: what failed -----")
            for line in o.failures or ["(outside its tests: see its output above)"]:
                print(f"  {line}")
    passed = sum(o.passed for o in outcomes)
    failed = sum(o.failed for o in outcomes)
    skipped = sum(o.skipped for o in outcomes)
    tail = f", {skipped} skipped" if skipped else ""
    print(f"tests: {passed} passed, {failed} failed{tail}")
    if not outcomes or passed == 0:
        print("no test ran", file=sys.stderr)
        return 1
    return 1 if failed or any(o.returncode for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
