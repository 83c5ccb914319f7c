"""The test harness names every failed test at the end of its output, where CI shows it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "harness"))

import run_suites


def test_failed_tests_are_named_with_their_message(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n"
        "def test_fine():\n    pass\n"
        "def test_wrong():\n    assert 1 == 2, 'one is not two'\n"
        "@pytest.fixture\ndef broken():\n    raise RuntimeError('fixture broke')\n"
        "def test_erroring(broken):\n    pass\n"
    )
    junit = tmp_path / "results.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    assert run_suites.count_junit(junit) == (1, 2, 0)
    failures = run_suites.failures_in_junit(junit)
    assert len(failures) == 2
    assert failures[0].startswith("test_sample::test_wrong: ")
    assert "one is not two" in failures[0]
    assert failures[1].startswith("test_sample::test_erroring: ")
    assert "fixture broke" in failures[1]
