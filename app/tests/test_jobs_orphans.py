"""Legacy jobs of a process that died: the reconciler dispatches them again (real killed
processes; the owner check against /proc)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from mailhelper import job_reconciler, job_runs
from mailhelper.job_owner import current_owner, owner_alive
from mailhelper.models import JobRun, utcnow
from mailhelper.runtime import Runtime
from sqlalchemy import delete

import tests.worker_tasks  # noqa: F401 - the `test_hold` job kind, for this process too
from tests.jobsenv import MAILHELPER, TESTS_ROOT, Worker, process_env, wait_job
from tests.worker_tasks import HOLD_FILE_ENV

MakeRuntime = Callable[..., Runtime]
HELD = 4


@pytest.fixture
def killed_holder(
    jobs_env: dict[str, str], jobs_runtime_factory: MakeRuntime, tmp_path: Path
) -> list[int]:
    """A real process with HELD jobs on its legacy queue (one worker thread: the first job
    runs, blocked, the others are queued), checked to be left alone while it lives, then
    killed with SIGKILL. Returns the job ids."""
    hold = tmp_path / "hold"
    hold.write_text("")
    env = {
        **jobs_env,
        "USE_LEGACY_JOBS": "true",
        "MAILHELPER_LEGACY_WORKERS": "1",
        HOLD_FILE_ENV: str(hold),
    }
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.legacy_holder", str(HELD)],
        env=process_env(env),
        stdout=subprocess.PIPE,
        cwd=TESTS_ROOT,
    )
    try:
        assert holder.stdout is not None
        ids = json.loads(holder.stdout.readline())
        rt = jobs_runtime_factory()
        wait_job(rt, ids[0], ("running",))
        rows = jobs(rt, ids)
        assert [r.status for r in rows] == ["running"] + ["queued"] * (HELD - 1)
        assert {r.backend for r in rows} == {"legacy"}
        assert {r.owner for r in rows} == {rows[0].owner}
        assert owner_alive(rows[0].owner) is True
        # the owner lives: nothing is orphaned, nothing changes
        assert job_reconciler.reconcile(rt)["orphaned"] == 0
        assert [(r.status, r.owner) for r in jobs(rt, ids)] == [(r.status, r.owner) for r in rows]
    finally:
        holder.kill()
        holder.wait(10)
    assert owner_alive(rows[0].owner) is False
    return ids


def jobs(rt: Runtime, ids: list[int]) -> list[JobRun]:
    with rt.sessions() as s:
        return [s.get(JobRun, i) for i in ids]


def test_legacy_jobs_of_a_killed_process_go_to_celery_in_phase_2(
    killed_holder: list[int],
    jobs_env: dict[str, str],
    jobs_runtime_factory: MakeRuntime,
    session_worker: Worker,
) -> None:
    ids = killed_holder
    rt = jobs_runtime_factory()
    assert rt.settings.job_phase == 2
    # the CLI, as an operator (or beat's reconcile_jobs task) runs it
    out = subprocess.run(
        [MAILHELPER, "reconcile-jobs", "--json"],
        env=process_env(jobs_env),
        capture_output=True,
        text=True,
        check=True,
        cwd=TESTS_ROOT,
    )
    result = json.loads(out.stdout)
    assert (result["orphaned"], result["requeued"], result["still_pending"]) == (HELD, HELD, 0)
    done = [wait_job(rt, i, ("success", "failed")) for i in ids]
    assert [d.status for d in done] == ["success"] * HELD
    # the interrupted one ran a second time; the backend shows where it was accepted
    assert [d.attempts for d in done] == [2] + [1] * (HELD - 1)
    assert {d.backend for d in done} == {"legacy"}
    assert job_reconciler.reconcile(rt)["orphaned"] == 0


def test_legacy_jobs_of_a_killed_process_run_on_this_legacy_queue_in_phase_0(
    killed_holder: list[int], jobs_runtime_factory: MakeRuntime
) -> None:
    ids = killed_holder
    rt = jobs_runtime_factory(USE_LEGACY_JOBS="true")
    result = job_reconciler.reconcile(rt)
    assert (result["orphaned"], result["requeued"]) == (HELD, HELD)
    done = [wait_job(rt, i, ("success", "failed")) for i in ids]
    assert [d.status for d in done] == ["success"] * HELD
    assert {d.owner for d in done} == {current_owner()}  # now held by this process


def test_owners_this_host_cannot_check_are_orphaned_only_after_the_timeout(
    jobs_runtime_factory: MakeRuntime,
) -> None:
    rt = jobs_runtime_factory(MAILHELPER_LEGACY_ORPHAN_TIMEOUT="3600")
    old = utcnow() - dt.timedelta(seconds=3700)
    young = utcnow() - dt.timedelta(seconds=3500)
    elsewhere = "other-host|boot|pid:[1]|4242|99"
    rows = {
        "old elsewhere": JobRun(enqueued_at=old, owner=elsewhere),
        "young elsewhere": JobRun(enqueued_at=young, owner=elsewhere),
        "old without owner": JobRun(enqueued_at=old, owner=None),
        "old, this process": JobRun(enqueued_at=old, owner=current_owner()),
        "old, celery": JobRun(enqueued_at=old, backend="celery"),
        "old, finished": JobRun(enqueued_at=old, owner=elsewhere, status="failed"),
    }
    with rt.sessions() as s:
        for row in rows.values():
            row.kind = "noop"
            row.backend = row.backend or "fallback"
            row.status = row.status or "retrying"
            row.attempts = 1
            s.add(row)
        s.commit()
        ids = {name: row.id for name, row in rows.items()}
    try:
        found = {j.id for j in job_reconciler.find_orphans(rt)}
    finally:  # the database is shared: no later reconciler run may take these rows
        with rt.sessions() as s:
            s.execute(delete(JobRun).where(JobRun.id.in_(ids.values())))
            s.commit()
    assert found & set(ids.values()) == {ids["old elsewhere"], ids["old without owner"]}
    assert owner_alive(elsewhere) is None
    assert owner_alive("not an owner") is None


def test_a_full_legacy_queue_leaves_reconciled_rows_pending_instead_of_failing_them(
    jobs_runtime_factory: MakeRuntime,
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hold = tmp_path / "hold"
    hold.write_text("")
    monkeypatch.setenv(HOLD_FILE_ENV, str(hold))  # `test_hold` jobs block in this process
    rt = jobs_runtime_factory(
        DATABASE_URL=pg_url,  # a database of its own: no other test's pending rows
        USE_LEGACY_JOBS="true",
        MAILHELPER_LEGACY_QUEUE_SIZE="1",
        MAILHELPER_LEGACY_WORKERS="1",
    )
    running = rt.jobs.submit("test_hold")
    wait_job(rt, running.id, ("running",))
    queued = rt.jobs.submit("test_hold")  # the queue (size 1) is full now
    # a row left pending (its process died between the dispatcher's two steps)
    left = job_runs.create(rt.sessions, "noop", "legacy")
    result = job_reconciler.reconcile(rt)
    assert (result["requeued"], result["still_pending"]) == (0, 1)
    assert wait_job(rt, left.id, ("pending",)).error is None  # not failed: tried again later
    hold.unlink()
    assert wait_job(rt, queued.id, ("success", "failed")).status == "success"
    assert job_reconciler.reconcile(rt)["requeued"] == 1
    assert wait_job(rt, left.id, ("success", "failed")).status == "success"
