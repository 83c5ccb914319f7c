"""Celery backend with a real Redis (production ACL) and a real `mailhelper worker`."""

from __future__ import annotations

import time

import pytest
from mailhelper import fanout_lock
from mailhelper.celery_app import TASK_SYNC_ALL, redis_client
from mailhelper.job_execution import KIND_NOOP
from mailhelper.models import JobRun, MailAccount, Message
from sqlalchemy import func, select, update

from tests.conftest import make_mailbox
from tests.jobsenv import Worker, wait_job, wait_until
from tests.mailgen import message
from tests.servers import DovecotServer, free_port


@pytest.fixture
def celery_rt(jobs_runtime_factory, session_worker: Worker):
    return jobs_runtime_factory()


def test_phase2_sync_runs_on_a_worker_and_records_every_step(
    celery_rt, dovecot: DovecotServer
) -> None:
    rt = celery_rt
    assert rt.settings.job_phase == 2
    box = make_mailbox(rt, dovecot)
    for i in range(3):
        box.append(message(i))
    job = rt.jobs.submit_sync(box.user_id, box.account_id, force=True)
    assert (job.backend, job.status) == ("celery", "queued")
    done = wait_job(rt, job.id, ("success", "failed"))
    assert (done.status, done.attempts, done.error) == ("success", 1, None)
    assert done.enqueued_at <= done.started_at <= done.finished_at
    with rt.sessions() as s:
        count = s.scalar(select(func.count()).where(Message.account_id == box.account_id))
    assert count == 3


def test_transient_errors_retry_with_backoff_then_fail(celery_rt, dovecot: DovecotServer) -> None:
    rt = celery_rt
    box = make_mailbox(rt, dovecot)
    closed = free_port()  # nothing listens: connection refused = transient
    with rt.sessions() as s:
        from mailhelper.accounts import update_account
        from mailhelper.models import User

        user = s.get(User, box.user_id)
        update_account(s, rt.ciphers, user, s.get(MailAccount, box.account_id), port=closed)
    job = rt.jobs.submit_sync(box.user_id, box.account_id, force=True)
    done = wait_job(rt, job.id, ("success", "failed"))
    # MAILHELPER_JOB_MAX_RETRIES=2: the first try and two retries
    assert (done.status, done.attempts) == ("failed", 3)
    assert done.error.startswith("ConnectionDroppedError")


def test_permanent_error_fails_at_once(celery_rt, dovecot: DovecotServer) -> None:
    rt = celery_rt
    box = make_mailbox(rt, dovecot)
    with rt.sessions() as s:
        from mailhelper.accounts import update_account
        from mailhelper.models import User

        user = s.get(User, box.user_id)
        update_account(s, rt.ciphers, user, s.get(MailAccount, box.account_id), password="nope")
    job = rt.jobs.submit_sync(box.user_id, box.account_id, force=True)
    done = wait_job(rt, job.id, ("success", "failed"))
    assert (done.status, done.attempts) == ("failed", 1)
    assert done.error.startswith("AuthenticationError")


def test_fan_out_one_job_per_account_never_a_second_copy(celery_rt, dovecot: DovecotServer) -> None:
    rt = celery_rt
    boxes = [make_mailbox(rt, dovecot) for _ in range(2)]
    client = redis_client(rt.settings)
    # another scheduled job of the first account is still queued: its lock is held
    assert fanout_lock.acquire(client, boxes[0].account_id, "older-job", 60)
    with rt.sessions() as s:
        before = s.scalar(select(func.max(JobRun.id))) or 0
        # only these two accounts are enabled for the scheduled sync
        s.execute(
            update(MailAccount)
            .where(MailAccount.id.not_in([b.account_id for b in boxes]))
            .values(sync_enabled=False)
        )
        s.commit()
    rt.jobs.celery.send_task(TASK_SYNC_ALL, queue=rt.settings.jobs.queue)

    def new_jobs() -> list[JobRun]:
        with rt.sessions() as s:
            return list(s.scalars(select(JobRun).where(JobRun.id > before)))

    wait_until(lambda: len(new_jobs()) >= 1)
    jobs = new_jobs()
    assert [j.account_id for j in jobs] == [boxes[1].account_id]
    done = wait_job(rt, jobs[0].id, ("success", "failed"))
    assert done.status == "success"
    assert done.force is False
    # released when the job finished; the other account's lock is untouched
    wait_until(lambda: fanout_lock.holder(client, boxes[1].account_id) is None, 30)
    assert fanout_lock.holder(client, boxes[0].account_id) == "older-job"
    assert fanout_lock.release(client, boxes[0].account_id, "older-job")
    client.close()


def test_expired_job_is_recorded(celery_rt) -> None:
    rt = celery_rt
    job = rt.jobs.submit(KIND_NOOP, expires=-1)  # already past its expiry when it arrives
    done = wait_job(rt, job.id, ("expired", "success", "failed"))
    assert done.status == "expired"


def test_health_reports_phase_redis_and_workers(celery_rt) -> None:
    from mailhelper.web import create_app

    # a job of its own, so the metrics below have a celery/success row whatever ran before
    done = wait_job(celery_rt, celery_rt.jobs.submit(KIND_NOOP).id, ("success", "failed"))
    assert done.status == "success"
    app = create_app(celery_rt)
    # /health gives the workers 1 s to answer a ping; on a loaded machine one ping can miss
    # it, so ask until the status is ok (a worker that never answers still fails this).
    deadline = time.monotonic() + 60
    body = app.test_client().get("/health")
    while body.json["status"] != "ok" and time.monotonic() < deadline:
        time.sleep(0.5)
        body = app.test_client().get("/health")
    assert body.status_code == 200
    assert body.json["status"] == "ok", body.json
    assert body.json["jobs"]["phase"] == 2
    assert body.json["checks"]["redis"]["status"] == "ok"
    assert any(w.startswith("session@") for w in body.json["checks"]["workers"]["workers"])
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'mailhelper_job_runs{backend="celery",status="success"}' in metrics
    assert "mailhelper_jobs_total" in metrics
