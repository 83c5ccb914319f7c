"""Every flag combination through the public dispatcher (`Runtime.jobs`), with the real
Redis (production ACL), a real worker, and the broker really down where it says so."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable

import pytest
from mailhelper import cli
from mailhelper.accounts import update_account
from mailhelper.errors import ConfigError
from mailhelper.models import MailAccount, User
from mailhelper.runtime import Runtime

from tests.conftest import make_mailbox
from tests.jobsenv import Worker, wait_job
from tests.mailgen import message
from tests.servers import DovecotServer, RedisServer, free_port

MakeRuntime = Callable[..., Runtime]


def break_account(rt: Runtime, user_id: int, account_id: int, **changes: object) -> None:
    with rt.sessions() as s:
        user = s.get(User, user_id)
        update_account(s, rt.ciphers, user, s.get(MailAccount, account_id), **changes)


def test_phase0_jobs_run_on_the_legacy_queue(
    jobs_runtime_factory: MakeRuntime, redis_server: RedisServer, dovecot: DovecotServer
) -> None:
    rt = jobs_runtime_factory(USE_LEGACY_JOBS="true", MAILHELPER_CELERY_QUEUE="mh-phase0")
    assert rt.settings.job_phase == 0
    box = make_mailbox(rt, dovecot)
    box.append(message(1))
    job = rt.jobs.submit_sync(box.user_id, box.account_id, force=True)
    assert job.backend == "legacy"
    done = wait_job(rt, job.id, ("success", "failed"))
    assert (done.status, done.attempts) == ("success", 1)
    # a transient error is retried after the legacy retry delays, then fails
    break_account(rt, box.user_id, box.account_id, port=free_port())
    job = rt.jobs.submit_sync(box.user_id, box.account_id, force=True)
    done = wait_job(rt, job.id, ("success", "failed"))
    assert (done.status, done.attempts) == ("failed", 3)  # MAILHELPER_LEGACY_RETRY_DELAYS=0.1,0.1
    assert done.error.startswith("ConnectionDroppedError")
    assert redis_server.client().llen("mh-phase0") == 0  # nothing went to the broker


def test_phase1_celery_when_up(
    jobs_runtime_factory: MakeRuntime, session_worker: Worker, dovecot: DovecotServer
) -> None:
    rt = jobs_runtime_factory(LEGACY_FALLBACK="true")
    assert rt.settings.job_phase == 1
    box = make_mailbox(rt, dovecot)
    job = rt.jobs.submit_sync(box.user_id, box.account_id, force=True)
    assert job.backend == "celery"
    assert wait_job(rt, job.id, ("success", "failed")).status == "success"


def test_broker_down_phase1_falls_back_phase2_stays_pending_then_drains(
    jobs_runtime_factory: MakeRuntime,
    session_worker: Worker,
    redis_server: RedisServer,
    dovecot: DovecotServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    jobs_env: dict[str, str],
) -> None:
    phase1 = jobs_runtime_factory(LEGACY_FALLBACK="true")
    phase2 = jobs_runtime_factory()
    box = make_mailbox(phase2, dovecot)
    box.append(message(1))
    redis_server.kill()
    try:
        with caplog.at_level(logging.WARNING, logger="mailhelper.dispatcher"):
            fallback = phase1.jobs.submit_sync(box.user_id, box.account_id, force=True)
        assert fallback.backend == "fallback"
        assert "runs on the legacy queue (fallback)" in caplog.text
        done = wait_job(phase1, fallback.id, ("success", "failed"))
        assert (done.status, done.backend) == ("success", "fallback")

        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="mailhelper.dispatcher"):
            pending = phase2.jobs.submit_sync(box.user_id, box.account_id, force=True)
        assert (pending.backend, pending.status) == ("celery", "pending")
        assert "stays pending" in caplog.text

        from mailhelper.web import create_app

        health = create_app(phase2).test_client().get("/health")
        assert health.status_code == 200  # requests are still accepted
        assert health.json["status"] == "degraded"
        assert health.json["checks"]["redis"]["status"] == "fail"
        assert health.json["jobs"]["phase"] == 2
        # the reconciler cannot hand it over yet: exit 75, still pending
        for key, value in jobs_env.items():
            monkeypatch.setenv(key, value)
        assert cli.main(["reconcile-jobs", "--json"]) == cli.EXIT_TRANSIENT
        assert wait_job(phase2, pending.id, ("pending",)).status == "pending"
    finally:
        redis_server.start()
    assert cli.main(["reconcile-jobs", "--json"]) == 0
    done = wait_job(phase2, pending.id, ("success", "failed"))
    assert (done.status, done.backend, done.attempts) == ("success", "celery", 1)


def test_phase2_any_use_of_the_legacy_module_warns(
    jobs_runtime_factory: MakeRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    rt = jobs_runtime_factory()
    assert rt.settings.job_phase == 2
    with pytest.warns(DeprecationWarning, match="removed in phase 3"):
        queue = rt.jobs.legacy_queue()
    assert "DEPRECATED" in caplog.text
    with pytest.warns(DeprecationWarning, match="deprecated"):
        queue.submit(10**9)  # an unknown job id: skipped by the runner
    assert queue.shutdown(5)


def test_flag_values_are_validated(jobs_env: dict[str, str]) -> None:
    from mailhelper.config import load_settings

    with pytest.raises(ConfigError, match="USE_LEGACY_JOBS must be true or false"):
        load_settings({**jobs_env, "USE_LEGACY_JOBS": "yes"})
    env = {k: v for k, v in jobs_env.items() if k not in ("USE_LEGACY_JOBS", "REDIS_URL")}
    assert load_settings(env).job_phase == 0  # embedded default: no broker, legacy queue
    with pytest.raises(ConfigError, match="REDIS_URL is required"):
        load_settings({**env, "USE_LEGACY_JOBS": "false"})
    absent = load_settings({**env, "REDIS_URL": jobs_env["REDIS_URL"]})
    assert (absent.use_legacy_jobs_flag, absent.job_phase) == (None, 2)


def test_legacy_import_is_lazy(jobs_env: dict[str, str]) -> None:
    """Nothing imports the legacy module unless the configuration allows legacy jobs."""
    code = (
        "import sys\n"
        "from mailhelper.web import create_app\n"
        "import mailhelper.cli, mailhelper.tasks, mailhelper.processes, mailhelper.dispatcher\n"
        "app = create_app()\n"
        "assert app.test_client().get('/health').status_code == 200\n"
        "print('mailhelper.legacy_jobs' in sys.modules)\n"
    )
    from tests.jobsenv import process_env

    out = subprocess.run(
        [sys.executable, "-c", code],
        env=process_env(jobs_env),
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"
