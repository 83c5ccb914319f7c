"""The dispatcher's rows of Celery jobs commit asynchronously; a message whose row the
database lost in a crash records its job again instead of being dropped."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from mailhelper import job_runs
from mailhelper.job_execution import KIND_NOOP, KIND_SYNC
from mailhelper.models import JobRun, Message
from mailhelper.runtime import Runtime
from mailhelper.tasks import after_hard_time_limit
from sqlalchemy import Connection, delete, func, select, text, update

from tests.conftest import make_mailbox
from tests.jobsenv import Worker, wait_until
from tests.mailgen import message
from tests.servers import DovecotServer, RedisServer

MakeRuntime = Callable[..., Runtime]


def test_task_id_names_the_job_to_the_microsecond() -> None:
    enqueued = dt.datetime(2026, 2, 28, 23, 59, 59, 999_999, tzinfo=dt.UTC)
    job = JobRun(id=41, kind=KIND_SYNC, enqueued_at=enqueued)
    first, second = job_runs.message_task_id(job), job_runs.message_task_id(job)
    assert first != second  # a resent job is a new task for Celery
    assert job_runs.message_identity(first) == (KIND_SYNC, 41, enqueued)
    naive = JobRun(id=7, kind=KIND_NOOP, enqueued_at=enqueued.replace(tzinfo=None))
    assert job_runs.message_identity(job_runs.message_task_id(naive)).enqueued_at == enqueued
    for other in (None, "", "4b1c6a0e-5f0e-4a7e-9d0c-2f3b1a9e8c7d", "job.noop.x.1.ab"):
        assert job_runs.message_identity(other) is None


def test_only_the_dispatchers_celery_rows_commit_asynchronously(
    jobs_runtime_factory: MakeRuntime,
) -> None:
    """The test server runs without fsync for speed, so the setting's source tells the
    fast pool (set by the client) from the others (the server's default)."""
    rt = jobs_runtime_factory()

    def setting(conn: Connection) -> tuple[str, str]:
        return tuple(
            conn.execute(
                text("SELECT setting, source FROM pg_settings WHERE name = 'synchronous_commit'")
            ).one()
        )

    assert job_runs._asynchronously(rt.sessions, setting) == ("off", "client")
    with job_runs._statement(rt.sessions) as conn:
        assert setting(conn)[1] != "client"
    with rt.engine.connect() as conn:
        assert setting(conn)[1] != "client"


def test_expiry_and_time_limit_handlers_leave_a_row_that_only_shares_the_id(
    jobs_runtime_factory: MakeRuntime,
) -> None:
    rt = jobs_runtime_factory(MAILHELPER_JOB_MAX_RETRIES="0")
    job = job_runs.create(rt.sessions, KIND_NOOP, "celery")
    own = job_runs.message_task_id(job)
    earlier = JobRun(id=job.id, kind=KIND_NOOP, enqueued_at=job.enqueued_at - dt.timedelta(1))
    assert job_runs.get_sent(rt.sessions, job.id, own).id == job.id
    assert job_runs.get_sent(rt.sessions, job.id, "a-bare-celery-uuid").id == job.id
    assert job_runs.get_sent(rt.sessions, job.id, job_runs.message_task_id(earlier)) is None
    stale = job_runs.message_task_id(earlier)
    assert after_hard_time_limit(rt, job.id, task_id=stale) == "skipped"
    assert job_runs.get(rt.sessions, job.id).status == job_runs.PENDING
    assert after_hard_time_limit(rt, job.id, task_id=own) == "failed"  # no retries left


def test_a_dropped_journal_connection_is_replaced(
    jobs_runtime_factory: MakeRuntime,
) -> None:
    """The fast pool has no pre-ping: a connection the server closed (as a restart would)
    fails once and is replaced, and the job is recorded."""
    rt = jobs_runtime_factory()
    first = job_runs.create(rt.sessions, KIND_NOOP, "celery")
    with rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        ended = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND state = 'idle' AND query LIKE 'INSERT INTO job_runs%'"
            )
        ).scalar_one()
    assert ended >= 1
    second = job_runs.create(rt.sessions, KIND_NOOP, "celery")
    assert second.id > first.id
    assert job_runs.get(rt.sessions, second.id).status == job_runs.PENDING


def test_rows_lost_in_a_crash_are_recorded_again_from_their_messages(
    jobs_env: dict[str, str],
    jobs_runtime_factory: MakeRuntime,
    redis_server: RedisServer,
    dovecot: DovecotServer,
    tmp_path: Path,
) -> None:
    """A PostgreSQL crash cannot be produced on cue: deleting the rows stands in for the
    lost asynchronous commits, and moving a row's enqueue time for an id the server handed
    out again after the crash."""
    env = {**jobs_env, "REDIS_URL": redis_server.url(7), "MAILHELPER_CELERY_QUEUE": "mh-lost"}
    rt = jobs_runtime_factory(**env)
    box = make_mailbox(rt, dovecot)
    box.dovecot.write_maildir(box.imap_user, [(message(i), "S") for i in range(5)])
    lost_sync = rt.jobs.submit_sync(box.user_id, box.account_id)
    lost_noop = rt.jobs.submit(KIND_NOOP)
    reused = rt.jobs.submit(KIND_NOOP)  # its id now names "another job"
    other_time = reused.enqueued_at - dt.timedelta(seconds=5)
    with rt.sessions() as s:
        s.execute(delete(JobRun).where(JobRun.id.in_([lost_sync.id, lost_noop.id])))
        s.execute(update(JobRun).where(JobRun.id == reused.id).values(enqueued_at=other_time))
        s.commit()
    before = max(lost_sync.id, lost_noop.id, reused.id)

    worker = Worker(env, tmp_path, name="lost", concurrency=1).start()
    try:

        def restored() -> list[JobRun]:
            with rt.sessions() as s:
                return list(s.scalars(select(JobRun).where(JobRun.id > before)))

        try:
            wait_until(
                lambda: (
                    len(restored()) == 3 and all(j.status in job_runs.TERMINAL for j in restored())
                )
            )
        except TimeoutError:
            raise AssertionError(f"{restored()}\n{worker.log()[-4000:]}") from None
    finally:
        worker.stop()
    jobs = {(j.kind, j.enqueued_at): j for j in restored()}
    assert set(jobs) == {
        (KIND_SYNC, lost_sync.enqueued_at),
        (KIND_NOOP, lost_noop.enqueued_at),
        (KIND_NOOP, reused.enqueued_at),
    }
    assert all(j.status == job_runs.SUCCESS and j.attempts == 1 for j in jobs.values())
    sync = jobs[(KIND_SYNC, lost_sync.enqueued_at)]
    assert (sync.user_id, sync.account_id) == (box.user_id, box.account_id)
    with rt.sessions() as s:
        stored = s.scalar(select(func.count()).where(Message.account_id == box.account_id))
        untouched = s.get(JobRun, reused.id)
        assert stored == 5
        # the row that only shares the id was not run in the message's name
        assert (untouched.status, untouched.attempts, untouched.started_at) == (
            job_runs.QUEUED,
            0,
            None,
        )
        s.delete(untouched)  # other tests read the shared table's figures
        s.commit()
    new_id = jobs[(KIND_NOOP, lost_noop.enqueued_at)].id
    assert f"job {lost_noop.id}: its row was lost" in worker.log()
    assert f"as job {new_id}" in worker.log()
