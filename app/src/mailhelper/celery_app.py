"""The Celery application: Redis broker and the reliability settings of the jobs layer.

`celery_config(settings)` is the single place the settings become Celery configuration;
`make_celery(settings)` builds a publishing app for a runtime (the dispatcher), the module
level `celery_app` is what worker and beat processes run (`mailhelper worker`, `beat`,
`flower`, which call `configure` with settings whose broker password came from Vault).

- late acks + reject on worker lost: a job whose worker dies is delivered again;
- prefetch 1: a worker reserves one job per process, the rest stay in Redis for others;
- soft time limit < hard time limit < visibility timeout (checked by `load_settings`):
  a job is stopped before Redis would hand its message to a second worker;
- results are ignored: the state of a job lives in `job_runs`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import redis
from celery import Celery, signals

from mailhelper.config import Settings

if TYPE_CHECKING:
    from mailhelper.runtime import Runtime

TASK_SYNC = "mailhelper.sync_user_emails"
TASK_RUN_JOB = "mailhelper.run_job"
TASK_SYNC_ALL = "mailhelper.sync_all_accounts"
TASK_RECONCILE = "mailhelper.reconcile_jobs"


def celery_config(settings: Settings) -> dict[str, Any]:
    jobs = settings.jobs
    return {
        "broker_url": settings.redis_url,
        "broker_transport_options": {
            "visibility_timeout": jobs.visibility_timeout,
            # look for messages of lost workers every few seconds (kombu's default sweep
            # runs about every 100 s), so a redelivery follows the visibility timeout closely
            "unacked_restore_interval": max(1, min(10, int(jobs.visibility_timeout / 5))),
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": jobs.broker_timeout,
            "socket_keepalive": True,
            "retry_on_timeout": True,
            "health_check_interval": 25,
        },
        "broker_connection_timeout": jobs.broker_timeout,
        "broker_connection_retry_on_startup": True,
        "broker_pool_limit": 10,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": jobs.soft_time_limit,
        "task_time_limit": jobs.time_limit,
        "task_ignore_result": True,
        "result_backend": None,
        "task_default_queue": jobs.queue,
        "task_serializer": "json",
        "accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
        # task events cost three broker publishes per job; Flower switches them on in the
        # workers it watches (enable_events), so they are off unless somebody looks
        "worker_send_task_events": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_max_tasks_per_child": jobs.worker_max_tasks_per_child,
        "beat_schedule": {
            "sync-all-accounts": {
                "task": TASK_SYNC_ALL,
                "schedule": jobs.sync_interval,
                "options": {"expires": jobs.sync_interval},
            },
            "reconcile-jobs": {
                "task": TASK_RECONCILE,
                "schedule": jobs.reconcile_interval,
                "options": {"expires": jobs.reconcile_interval},
            },
        },
    }


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured from `settings` (publishing, control, health checks)."""
    app = Celery("mailhelper", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


class _WorkerApp(Celery):
    def on_configure(self) -> None:
        # `celery -A mailhelper.celery_app ...` without the entry points: read the
        # configuration (and, in production, the Vault secrets) on first use
        if _state.settings is None:
            from mailhelper.runtime import resolve_settings
            from mailhelper.vault import WORKER_SECRETS

            _state.settings = resolve_settings(secrets=WORKER_SECRETS)
            self.conf.update(celery_config(_state.settings))


class _State:
    settings: Settings | None = None
    runtime: Runtime | None = None
    redis: redis.Redis | None = None
    lock = threading.Lock()


_state = _State()
celery_app = _WorkerApp("mailhelper", include=["mailhelper.tasks"])


def configure(settings: Settings) -> Celery:
    """Configure the worker/beat app with resolved settings (before it starts)."""
    _state.settings = settings
    celery_app.conf.update(celery_config(settings))
    return celery_app


def current_settings() -> Settings:
    if _state.settings is None:
        _ = celery_app.conf.broker_url  # loads the configuration through on_configure
    assert _state.settings is not None  # noqa: S101 - set by on_configure
    return _state.settings


def worker_runtime() -> Runtime:
    """The runtime of this worker process, built on first use (after the fork)."""
    with _state.lock:
        if _state.runtime is None:
            from mailhelper.runtime import build_runtime
            from mailhelper.vault import WORKER_SECRETS

            _state.runtime = build_runtime(current_settings(), secrets=WORKER_SECRETS)
        return _state.runtime


def broker_redis() -> redis.Redis:
    """A plain Redis client on the broker (per-account locks)."""
    with _state.lock:
        if _state.redis is None:
            settings = current_settings()
            _state.redis = redis_client(settings)
        return _state.redis


def redis_client(settings: Settings) -> redis.Redis:
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not configured")
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.jobs.broker_timeout,
        socket_timeout=max(5.0, settings.jobs.broker_timeout),
        health_check_interval=25,
    )


@signals.worker_process_init.connect
def _after_fork(**_kwargs: Any) -> None:
    # nothing built in the parent may be shared with a forked pool process (the parent's
    # pooled database connections are dropped here without closing them: they are its own)
    inherited, _state.runtime, _state.redis = _state.runtime, None, None
    if inherited is not None:
        from mailhelper import job_runs

        job_runs.dispose(inherited.engine, close=False)
        inherited.engine.dispose(close=False)
    # build the runtime now, not in the first job: a pool process replaced after
    # --max-tasks-per-child would otherwise delay the job it takes next
    try:
        worker_runtime()
    except Exception:  # the first job builds it again and reports the error in job_runs
        _state.runtime = None


@signals.worker_process_shutdown.connect
def _at_exit(**_kwargs: Any) -> None:
    if _state.runtime is not None:
        _state.runtime.close()
