"""The processes the systemd units run (`mailhelper worker`, `flower`, `beat`): production
secrets from Vault never on a command line or in the environment; phase 3 (legacy module
deleted) runs on Celery alone and refuses a leftover USE_LEGACY_JOBS=true."""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mailhelper import cli
from mailhelper.job_execution import KIND_NOOP
from mailhelper.runtime import build_runtime

from tests.conftest import make_mailbox
from tests.jobsenv import MAILHELPER, Worker, process_env, wait_job
from tests.mailgen import message
from tests.servers import BaoServer, DovecotServer, RedisServer, free_port, wait_for_port
from tests.test_vault import production  # noqa: F401 - fixture

SRC = Path(__file__).resolve().parent.parent / "src" / "mailhelper"


def secrets_in_process(pid: int, values: list[str]) -> list[str]:
    found = []
    for name in ("cmdline", "environ"):
        data = Path(f"/proc/{pid}/{name}").read_bytes()
        found += [f"{name}:{v[:4]}..." for v in values if v.encode() in data]
    return found


def fetch(url: str, auth: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url)  # noqa: S310 - http://127.0.0.1 only
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def get(url: str, auth: str | None = None) -> int:
    return fetch(url, auth)[0]


def test_production_worker_and_flower_read_secrets_from_vault_only(
    production: dict[str, str],  # noqa: F811
    bao: BaoServer,
    redis_server: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flower_user, flower_pw = "ops", secrets.token_urlsafe(18)
    bao.write_kv("redis", {"app_password": redis_server.password})
    bao.write_kv("flower", {"username": flower_user, "password": flower_pw})
    env = {
        **production,
        "REDIS_URL": redis_server.url(3, password=False),  # production: no password in the URL
        "MAILHELPER_CELERY_QUEUE": "mh-production",
        "MAILHELPER_FLOWER_DB": str(tmp_path / "flower.db"),
        "MAILHELPER_BEAT_SCHEDULE_FILE": str(tmp_path / "beat-schedule"),
        "USE_LEGACY_JOBS": "false",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # as the migration unit: with the migrator's own AppRole, then back to the app's
    migrator = bao.credentials_dir("mailhelper-migrator", prefix="vault-migrator-")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(migrator))
    assert cli.main(["db", "upgrade"]) == 0
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", production["CREDENTIALS_DIRECTORY"])
    # each process with its own AppRole and the bundle's policy, as the units run them
    worker_env = {**env, "CREDENTIALS_DIRECTORY": str(bao.credentials_dir("mailhelper-worker"))}
    flower_env = {**env, "CREDENTIALS_DIRECTORY": str(bao.credentials_dir("mailhelper-flower"))}
    worker = Worker(worker_env, tmp_path, name="prod", concurrency=1).start()
    port = free_port()
    flower = Worker(flower_env, tmp_path, name="flower", command=("flower", f"--port={port}"))
    flower.start(wait_for=None)
    try:
        wait_for_port(port, 60, proc=flower.proc)
        all_secrets = [
            redis_server.password,
            flower_pw,
            bao.kv["postgresql"]["app_password"],
        ]
        for process in (worker, flower):
            for pid in process.pids():
                assert secrets_in_process(pid, all_secrets) == [], process.name
        assert len(worker.pids()) == 2  # main process and one pool process were checked
        # the worker (under the production ACL) runs jobs the production app dispatches
        rt = build_runtime()
        try:
            job = rt.jobs.submit(KIND_NOOP)
            assert wait_job(rt, job.id, ("success", "failed")).status == "success"
        finally:
            rt.close()
        base = f"http://127.0.0.1:{port}"
        assert get(f"{base}/") == 401
        assert get(f"{base}/", f"{flower_user}:wrong") == 401
        assert get(f"{base}/", f"{flower_user}:{flower_pw}") == 200
        assert get(f"{base}/broker", f"{flower_user}:{flower_pw}") == 200
        # Flower inspects the workers over the broker (control broadcast under the ACL)
        status, body = fetch(f"{base}/api/workers?refresh=1", f"{flower_user}:{flower_pw}")
        assert status == 200
        assert any(name.startswith("prod@") for name in json.loads(body)), body[:300]
    finally:
        flower.stop()
        worker.stop()
    assert "NOPERM" not in worker.log() + flower.log()


def test_beat_runs_the_fan_out(
    jobs_env: dict[str, str],
    jobs_runtime_factory,
    session_worker: Worker,
    dovecot: DovecotServer,
    tmp_path: Path,
) -> None:
    from mailhelper.models import JobRun
    from sqlalchemy import func, select

    rt = jobs_runtime_factory()
    make_mailbox(rt, dovecot)
    with rt.sessions() as s:
        before = s.scalar(select(func.max(JobRun.id))) or 0
    env = {
        **jobs_env,
        "MAILHELPER_SYNC_INTERVAL": "1",
        "MAILHELPER_BEAT_SCHEDULE_FILE": str(tmp_path / "schedule"),
    }
    beat = Worker(env, tmp_path, name="beat", command=("beat", "--loglevel=INFO"))
    beat.start(wait_for="Sending due task sync-all-accounts")
    try:

        def scheduled() -> int:
            with rt.sessions() as s:
                return s.scalar(
                    select(func.count()).where(JobRun.id > before, JobRun.force.is_(False))
                )

        from tests.jobsenv import wait_until

        wait_until(lambda: scheduled() >= 1, 90)
    finally:
        beat.stop()
    assert (tmp_path / "schedule").exists() or list(tmp_path.glob("schedule*"))


def test_phase3_app_without_the_legacy_module(
    jobs_env: dict[str, str],
    jobs_runtime_factory,
    dovecot: DovecotServer,
    tmp_path: Path,
) -> None:
    copy = tmp_path / "pkg"
    shutil.copytree(SRC, copy / "mailhelper", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "mailhelper" / "legacy_jobs.py").unlink()
    env = {k: v for k, v in jobs_env.items() if k not in ("USE_LEGACY_JOBS", "LEGACY_FALLBACK")}
    env["MAILHELPER_CELERY_QUEUE"] = "mh-phase3"
    penv = process_env(env)
    penv["PYTHONPATH"] = f"{copy}:{penv['PYTHONPATH']}"

    def run(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            args, env={**penv, **(extra or {})}, capture_output=True, text=True, timeout=120
        )

    code = (
        "import sys, mailhelper\n"
        "from mailhelper.web import create_app\n"
        "app = create_app()\n"
        "print(mailhelper.__file__)\n"
        "print(app.test_client().get('/health').get_json()['jobs']['phase'])\n"
        "print('mailhelper.legacy_jobs' in sys.modules)\n"
    )
    out = run(sys.executable, "-c", code)
    assert out.returncode == 0, out.stderr
    where, phase, loaded = out.stdout.split()
    assert where.startswith(str(copy))
    assert (phase, loaded) == ("3", "False")

    rt = jobs_runtime_factory()
    box = make_mailbox(rt, dovecot)
    box.append(message(3))
    worker = Worker(env, tmp_path, name="phase3", concurrency=1)
    worker.env = penv
    worker.start()
    try:
        out = run(
            MAILHELPER, "enqueue-sync", "--account", str(box.account_id), "--wait", "60", "--json"
        )
    finally:
        worker.stop()
    assert out.returncode == 0, out.stderr
    job = json.loads(out.stdout)
    assert (job["backend"], job["status"]) == ("celery", "success")

    # a leftover flag is a clear startup error everywhere, naming the flag
    leftover = {"USE_LEGACY_JOBS": "true"}
    for argv in (
        (MAILHELPER, "cutoff-report", "--json"),
        (MAILHELPER, "worker"),
        (MAILHELPER, "beat"),
        (sys.executable, "-c", "from mailhelper.web import create_app; create_app()"),
    ):
        out = run(*argv, extra=leftover)
        assert out.returncode != 0, argv
        assert "USE_LEGACY_JOBS=true but the legacy job queue" in out.stderr, argv
    out = run(MAILHELPER, "cutoff-report", "--json", extra={"LEGACY_FALLBACK": "true"})
    assert out.returncode == 1
    assert "LEGACY_FALLBACK=true" in out.stderr
