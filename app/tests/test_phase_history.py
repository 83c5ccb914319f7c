"""`mailhelper phase record|show`: the recorded history of the job-queue phases, which
the phase playbooks write and their gates, cutoff-report and /health read."""

from __future__ import annotations

import io
import json

import pytest
from mailhelper import cli
from mailhelper.runtime import Runtime

T1 = "2026-01-28T09:00:00+00:00"
T2 = "2026-02-12T09:00:00+00:00"


def run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, dict | str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else err)


@pytest.fixture
def phase_env(base_env: dict[str, str], db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {**base_env, "DATABASE_URL": db_url, "USE_LEGACY_JOBS": "true"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MAILHELPER_NOW", raising=False)


def test_transitions_are_recorded_with_actor_duration_and_force(
    phase_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, empty = run(monkeypatch, capsys, "phase", "show", "--now", T1)
    assert code == 0
    assert empty == {"phase": None, "since": None, "days_in_phase": None, "transitions": []}

    code, one = run(
        monkeypatch,
        capsys,
        "phase",
        "record",
        "--from",
        "0",
        "--to",
        "1",
        "--actor",
        "ops@ctl",
        "--source",
        "phase1_parallel.yml",
        "--now",
        T1,
    )
    assert code == 0
    assert one["phase"] == 1
    assert one["since"] == T1
    code, two = run(
        monkeypatch,
        capsys,
        "phase",
        "record",
        "--from",
        "1",
        "--to",
        "2",
        "--actor",
        "ops@ctl",
        "--forced",
        "--reason",
        "vendor deadline",
        "--now",
        T2,
    )
    assert code == 0
    assert [t["to_phase"] for t in two["transitions"]] == [2, 1]
    assert two["transitions"][0]["forced"] is True
    assert two["transitions"][0]["reason"] == "vendor deadline"
    assert two["transitions"][1]["forced"] is False

    # Durations are measured at the clock asked for; later transitions are not seen earlier.
    code, later = run(monkeypatch, capsys, "phase", "show", "--now", "2026-02-19T09:00:00Z")
    assert later["phase"] == 2
    assert later["days_in_phase"] == 7.0
    code, earlier = run(monkeypatch, capsys, "phase", "show", "--now", "2026-02-01T09:00:00Z")
    assert earlier["phase"] == 1
    assert earlier["days_in_phase"] == 4.0

    code, report = run(
        monkeypatch, capsys, "cutoff-report", "--json", "--now", "2026-02-19T09:00:00Z"
    )
    assert report["phase_history"]["phase"] == 2
    assert report["phase_history"]["since"] == T2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "2", "--actor", "ops", "--forced"], "a forced transition needs a reason"),
        (["--to", "2", "--actor", " "], "needs an actor"),
    ],
)
def test_bad_transitions_are_refused_and_not_recorded(
    phase_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    code, err = run(monkeypatch, capsys, "phase", "record", *args)
    assert code == 1
    assert message in err
    code, shown = run(monkeypatch, capsys, "phase", "show")
    assert shown["transitions"] == []


def test_health_shows_the_recorded_phase(runtime: Runtime) -> None:
    from mailhelper.phase_history import record_transition
    from mailhelper.web import create_app

    client = create_app(runtime).test_client()
    assert client.get("/health").get_json()["jobs"]["recorded_phase"] is None
    with runtime.sessions() as session:
        record_transition(session, to_phase=1, from_phase=0, actor="ops", source="test")
        session.commit()
    recorded = client.get("/health").get_json()["jobs"]["recorded_phase"]
    assert recorded["to_phase"] == 1
    assert recorded["actor"] == "ops"


def test_ping_workers_lists_the_workers_that_answer(
    jobs_env: dict[str, str],
    session_worker: object,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in jobs_env.items():
        monkeypatch.setenv(key, value)
    code, out = run(monkeypatch, capsys, "ping-workers", "--timeout", "5")
    assert code == 0, out
    assert any(name.startswith("session@") for name in out["workers"]), out


def test_ping_workers_exits_75_when_no_worker_answers(
    jobs_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in jobs_env.items():
        monkeypatch.setenv(key, value)
    # A database number no worker listens on: the broker answers, nobody replies.
    monkeypatch.setenv("REDIS_URL", jobs_env["REDIS_URL"].rsplit("/", 1)[0] + "/9")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli.main(["ping-workers", "--timeout", "1"]) == 75
    assert json.loads(capsys.readouterr().out) == {"workers": []}
