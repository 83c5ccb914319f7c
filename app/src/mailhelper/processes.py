"""`mailhelper worker`, `mailhelper beat`, `mailhelper flower`: the processes the systemd
units run.

Each one reads the configuration, logs in to Vault with AppRole (production) and reads the
broker password (KV `mailhelper/redis`) and, for Flower, the basic-auth credentials (KV
`mailhelper/flower`), then starts the real Celery worker, beat or Flower *in this process*:
the secrets stay in memory and never appear on a command line, in the environment or in a
file. Pool processes of the worker are forked from it and inherit the settings.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mailhelper.celery_app import configure
from mailhelper.config import Settings
from mailhelper.errors import ConfigError

log = logging.getLogger(__name__)


def worker_argv(
    settings: Settings,
    *,
    concurrency: int | None = None,
    max_tasks_per_child: int | None = None,
    hostname: str | None = None,
    loglevel: str = "INFO",
    include: Sequence[str] = (),
) -> list[str]:
    jobs = settings.jobs
    argv = [
        "worker",
        f"--loglevel={loglevel}",
        f"--concurrency={concurrency or jobs.worker_concurrency}",
        f"--max-tasks-per-child={max_tasks_per_child or jobs.worker_max_tasks_per_child}",
        f"--queues={jobs.queue}",
        "--without-mingle",
        "--without-gossip",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    argv += [f"--include={module}" for module in include]
    return argv


def run_worker(settings: Settings, argv: list[str]) -> int:
    if not settings.redis_url:
        raise ConfigError("REDIS_URL is required for `mailhelper worker`")
    app = configure(settings)
    app.worker_main(argv)
    return 0


def run_beat(settings: Settings, *, schedule: Path | None = None, loglevel: str = "INFO") -> int:
    if not settings.redis_url:
        raise ConfigError("REDIS_URL is required for `mailhelper beat`")
    schedule = schedule or settings.jobs.beat_schedule_file
    assert schedule is not None  # noqa: S101 - defaulted by load_settings
    schedule.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    app = configure(settings)
    code = app.start(["beat", f"--schedule={schedule}", f"--loglevel={loglevel}"])
    return int(code or 0)


def flower_credentials(settings: Settings) -> str | None:
    """`user:password` for Flower's basic auth: from Vault KV `mailhelper/flower` in
    production; in development none (Flower then listens on loopback only)."""
    if not settings.production:
        return None
    from mailhelper.vault import VaultSession

    session = VaultSession(settings.vault)
    username = session.kv_field("flower", "username")
    password = session.kv_field("flower", "password")
    return f"{username}:{password}"


def run_flower(
    settings: Settings,
    *,
    address: str | None = None,
    port: int | None = None,
    url_prefix: str | None = None,
    db: Path | None = None,
    basic_auth: str | None = None,
) -> int:
    """Flower's own command does the same, but takes its options from argv or FLOWER_*
    variables; here they are set in memory."""
    if not settings.redis_url:
        raise ConfigError("REDIS_URL is required for `mailhelper flower`")
    from flower import options as _defined  # noqa: F401 - defines Flower's tornado options
    from flower.app import Flower
    from flower.urls import settings as web_settings
    from flower.utils import prepend_url
    from tornado.options import options

    jobs = settings.jobs
    address = address or jobs.flower_address
    if not basic_auth and address not in ("127.0.0.1", "::1", "localhost"):
        raise ConfigError(
            "Flower without basic auth listens on loopback only "
            "(MAILHELPER_FLOWER_ADDRESS / --address)"
        )
    db = db or jobs.flower_db
    assert db is not None  # noqa: S101 - defaulted by load_settings
    db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    options.address = address
    options.port = port if port is not None else jobs.flower_port
    options.url_prefix = (url_prefix if url_prefix is not None else jobs.flower_url_prefix).strip(
        "/"
    )
    options.db = str(db)
    options.persistent = True
    options.basic_auth = [basic_auth] if basic_auth else []
    web: dict[str, Any] = dict(web_settings)
    if options.url_prefix:
        for name in ("login_url", "static_url_prefix"):
            web[name] = prepend_url(web[name], options.url_prefix)
    app = configure(settings)
    flower = Flower(capp=app, options=options, **web)
    atexit.register(flower.stop)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    bound = flower.start_http_server()
    log.warning(
        "Flower on http://%s:%s/%s (basic auth %s)",
        address,
        bound,
        options.url_prefix,
        "on" if basic_auth else "off",
    )
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        flower.start()
    return 0
