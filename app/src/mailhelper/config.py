"""Configuration from environment variables and files.

Development (the default) needs no configuration at all: SQLite and a local key file in a
per-user data directory. Production (`MAILHELPER_ENV=production`) refuses development-only
sources: secrets come from Vault KV after an AppRole login, never from the environment.
"""

from __future__ import annotations

import importlib.util
import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from mailhelper.errors import ConfigError

ENVIRONMENTS = ("development", "production")
KEY_PROVIDERS = ("local", "vault")


@dataclass(frozen=True)
class VaultSettings:
    """Where Vault is and which mounts and names the app uses (defaults = vault role)."""

    addr: str | None = None
    cacert: str | None = None
    role_id_file: Path | None = None
    secret_id_file: Path | None = None
    # The migrator's own AppRole (`db upgrade`, `migrate-sqlite`): only it may read the
    # PostgreSQL migrator password (KV `postgresql-migrator`, policy mailhelper-migrator).
    migrator_role_id_file: Path | None = None
    migrator_secret_id_file: Path | None = None
    identity: str = "app"  # whose credential files role_id_file/secret_id_file are
    transit_mount: str = "transit"
    transit_key: str = "mailhelper"
    approle_mount: str = "approle"
    kv_mount: str = "kv"
    kv_prefix: str = "mailhelper"
    timeout: float = 10.0
    # how long start-up waits for a sealed or unreachable Vault (0: fail at once)
    startup_wait: float = 300.0

    def as_migrator(self) -> VaultSettings:
        """The same Vault with the migrator's AppRole credential files (never the app's)."""
        return replace(
            self,
            role_id_file=self.migrator_role_id_file,
            secret_id_file=self.migrator_secret_id_file,
            identity="migrator",
        )


LEGACY_MODULE = "mailhelper.legacy_jobs"


@dataclass(frozen=True)
class JobSettings:
    """The jobs layer: backends, Celery reliability limits, schedules, worker and Flower.

    Invariants checked by `load_settings`: soft time limit < hard time limit < broker
    visibility timeout, and every countdown (fan-out jitter, retry backoff) shorter than the
    visibility timeout (a delayed message held longer would be delivered twice)."""

    soft_time_limit: float = 900.0
    time_limit: float = 1200.0
    visibility_timeout: float = 3600.0
    max_retries: int = 5
    retry_backoff: float = 30.0
    retry_backoff_max: float = 1800.0
    sync_interval: float = 300.0
    sync_jitter: float = 60.0
    sync_expires: float = 600.0
    broker_timeout: float = 2.0
    reconcile_interval: float = 60.0
    pending_grace: float = 30.0
    queue: str = "mailhelper"
    legacy_queue_size: int = 100
    legacy_workers: int = 2
    legacy_retry_delays: tuple[float, ...] = (30.0, 120.0, 600.0)
    legacy_drain_timeout: float = 30.0
    legacy_orphan_timeout: float = 21600.0
    worker_concurrency: int = 2
    worker_max_tasks_per_child: int = 1000
    beat_schedule_file: Path | None = None
    flower_address: str = "127.0.0.1"
    flower_port: int = 5555
    flower_url_prefix: str = ""
    flower_db: Path | None = None

    @property
    def account_lock_ttl(self) -> float:
        """How long a per-account fan-out lock may live: queued (expiry) plus running."""
        return self.sync_expires + self.time_limit


@dataclass(frozen=True)
class Settings:
    """Everything the app needs to start, resolved and validated."""

    env: str = "development"
    data_dir: Path = field(default_factory=lambda: Path("."))
    database_url: str = ""
    migrator_database_url: str | None = None
    redis_url: str | None = None
    secret_key: str = ""
    key_provider: str = "local"
    local_key_file: Path | None = None
    vault: VaultSettings = field(default_factory=VaultSettings)
    imap_ca_file: str | None = None
    imap_timeout: float = 30.0
    sync_batch_messages: int = 250
    sync_batch_bytes: int = 8 * 1024 * 1024
    sync_lock_timeout: float = 600.0
    data_key_cache_seconds: float = 300.0
    registration_open: bool = True
    use_legacy_jobs_flag: bool | None = None  # USE_LEGACY_JOBS as configured (None: absent)
    use_legacy_jobs: bool = True  # effective: jobs run on the legacy in-process queue
    legacy_fallback: bool = False
    legacy_module_present: bool = True
    jobs: JobSettings = field(default_factory=JobSettings)

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def job_phase(self) -> int:
        """0 legacy queue, 1 Celery with legacy fallback, 2 Celery only (legacy module still
        installed), 3 Celery only without the legacy module."""
        if self.use_legacy_jobs:
            return 0
        if self.legacy_fallback:
            return 1
        return 2 if self.legacy_module_present else 3

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def default_data_dir(env: Mapping[str, str]) -> Path:
    """Per-user data directory (XDG) used by the embedded default."""
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".local/share")
    return Path(base) / "mailhelper"


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if math.isnan(value):
        raise ConfigError(f"{name} must be a number, got {raw!r}")
    if value <= minimum:
        raise ConfigError(f"{name} must be greater than {minimum:g}, got {raw!r}")
    return value


def _count(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    value = _number(env, name, default, minimum=minimum)
    if value != int(value):
        raise ConfigError(f"{name} must be a whole number, got {env.get(name)!r}")
    return int(value)


def _seconds_or_zero(env: Mapping[str, str], name: str, default: float) -> float:
    value = _number(env, name, default, minimum=-math.inf)
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {env.get(name)!r}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    value = raw.strip().lower()
    if value not in ("true", "false"):
        raise ConfigError(f"{name} must be true or false, got {raw!r}")
    return value == "true"


def legacy_module_present() -> bool:
    """Whether mailhelper/legacy_jobs.py is installed (found, not imported)."""
    return importlib.util.find_spec(LEGACY_MODULE) is not None


def _job_settings(env: Mapping[str, str], data_dir: Path) -> JobSettings:
    delays_raw = env.get("MAILHELPER_LEGACY_RETRY_DELAYS") or "30,120,600"
    try:
        delays = tuple(float(x) for x in delays_raw.split(",") if x.strip())
    except ValueError:
        raise ConfigError(
            f"MAILHELPER_LEGACY_RETRY_DELAYS must be comma-separated seconds, got {delays_raw!r}"
        ) from None
    if any(d < 0 for d in delays):
        raise ConfigError("MAILHELPER_LEGACY_RETRY_DELAYS must not be negative")
    jobs = JobSettings(
        soft_time_limit=_number(env, "MAILHELPER_JOB_SOFT_TIME_LIMIT", 900.0),
        time_limit=_number(env, "MAILHELPER_JOB_TIME_LIMIT", 1200.0),
        visibility_timeout=_number(env, "MAILHELPER_BROKER_VISIBILITY_TIMEOUT", 3600.0),
        max_retries=_count(env, "MAILHELPER_JOB_MAX_RETRIES", 5, minimum=-1),
        retry_backoff=_number(env, "MAILHELPER_JOB_RETRY_BACKOFF", 30.0),
        retry_backoff_max=_number(env, "MAILHELPER_JOB_RETRY_BACKOFF_MAX", 1800.0),
        sync_interval=_number(env, "MAILHELPER_SYNC_INTERVAL", 300.0),
        sync_jitter=_seconds_or_zero(env, "MAILHELPER_SYNC_JITTER", 60.0),
        sync_expires=_number(env, "MAILHELPER_SYNC_EXPIRES", 600.0),
        broker_timeout=_number(env, "MAILHELPER_BROKER_TIMEOUT", 2.0),
        reconcile_interval=_number(env, "MAILHELPER_RECONCILE_INTERVAL", 60.0),
        pending_grace=_seconds_or_zero(env, "MAILHELPER_PENDING_GRACE", 30.0),
        queue=env.get("MAILHELPER_CELERY_QUEUE") or "mailhelper",
        legacy_queue_size=_count(env, "MAILHELPER_LEGACY_QUEUE_SIZE", 100),
        legacy_workers=_count(env, "MAILHELPER_LEGACY_WORKERS", 2),
        legacy_retry_delays=delays,
        legacy_drain_timeout=_number(env, "MAILHELPER_LEGACY_DRAIN_TIMEOUT", 30.0),
        legacy_orphan_timeout=_number(env, "MAILHELPER_LEGACY_ORPHAN_TIMEOUT", 21600.0),
        worker_concurrency=_count(env, "MAILHELPER_WORKER_CONCURRENCY", 2),
        worker_max_tasks_per_child=_count(env, "MAILHELPER_WORKER_MAX_TASKS_PER_CHILD", 1000),
        beat_schedule_file=Path(
            env.get("MAILHELPER_BEAT_SCHEDULE_FILE") or data_dir / "celerybeat-schedule"
        ),
        flower_address=env.get("MAILHELPER_FLOWER_ADDRESS") or "127.0.0.1",
        flower_port=_count(env, "MAILHELPER_FLOWER_PORT", 5555),
        flower_url_prefix=(env.get("MAILHELPER_FLOWER_URL_PREFIX") or "").strip("/"),
        flower_db=Path(env.get("MAILHELPER_FLOWER_DB") or data_dir / "flower.db"),
    )
    if not jobs.soft_time_limit < jobs.time_limit < jobs.visibility_timeout:
        raise ConfigError(
            "MAILHELPER_JOB_SOFT_TIME_LIMIT < MAILHELPER_JOB_TIME_LIMIT < "
            "MAILHELPER_BROKER_VISIBILITY_TIMEOUT must hold (a job still running when the "
            f"broker redelivers it would run twice); got {jobs.soft_time_limit:g}, "
            f"{jobs.time_limit:g}, {jobs.visibility_timeout:g}"
        )
    for name, value in (
        ("MAILHELPER_SYNC_JITTER", jobs.sync_jitter),
        ("MAILHELPER_JOB_RETRY_BACKOFF_MAX", jobs.retry_backoff_max),
    ):
        if value >= jobs.visibility_timeout:
            raise ConfigError(
                f"{name} ({value:g} s) must be shorter than MAILHELPER_BROKER_VISIBILITY_TIMEOUT "
                f"({jobs.visibility_timeout:g} s): a delayed message is redelivered after it"
            )
    if jobs.legacy_orphan_timeout <= sum(jobs.legacy_retry_delays):
        raise ConfigError(
            "MAILHELPER_LEGACY_ORPHAN_TIMEOUT must be longer than the legacy retry delays "
            "together (MAILHELPER_LEGACY_RETRY_DELAYS): a job waiting for a retry is not orphaned"
        )
    if jobs.sync_expires <= jobs.sync_jitter:
        raise ConfigError("MAILHELPER_SYNC_EXPIRES must be longer than MAILHELPER_SYNC_JITTER")
    return jobs


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _check_db_url(name: str, value: str, *, production: bool, legacy_sqlite: bool = False) -> URL:
    try:
        url = make_url(value)
    except ArgumentError:
        raise ConfigError(f"{name} is not a valid database URL") from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"{name} must be a sqlite:// or postgresql:// URL")
    if production:
        if url.get_backend_name() == "sqlite" and legacy_sqlite:
            return url  # an existing single-host install until `migrate-sqlite` moves it
        if url.get_backend_name() != "postgresql":
            raise ConfigError(
                f"{name} must point to PostgreSQL in production (an existing SQLite install "
                "awaiting its migration: MAILHELPER_LEGACY_SQLITE=true)"
            )
        if url.password:
            raise ConfigError(
                f"{name} must not carry a password in production; "
                "the app reads it from Vault KV after AppRole login"
            )
    return url


def _credential_file(env: Mapping[str, str], override: str, name: str) -> Path | None:
    if env.get(override):
        return Path(env[override])
    creds = env.get("CREDENTIALS_DIRECTORY")
    return Path(creds) / name if creds else None


def _dev_secret_key(data_dir: Path) -> str:
    """A random secret key kept in the data directory so sessions survive restarts."""
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


KNOWN_VARIABLES = frozenset(
    {
        "MAILHELPER_ENV",
        "MAILHELPER_DATA_DIR",
        "DATABASE_URL",
        "MAILHELPER_MIGRATOR_DATABASE_URL",
        "MAILHELPER_LEGACY_SQLITE",
        "REDIS_URL",
        "SECRET_KEY",
        "MAILHELPER_KEY_PROVIDER",
        "MAILHELPER_LOCAL_KEY_FILE",
        "VAULT_ADDR",
        "VAULT_CACERT",
        "MAILHELPER_VAULT_ROLE_ID_FILE",
        "MAILHELPER_VAULT_SECRET_ID_FILE",
        "MAILHELPER_VAULT_TRANSIT_MOUNT",
        "MAILHELPER_VAULT_TRANSIT_KEY",
        "MAILHELPER_VAULT_APPROLE_MOUNT",
        "MAILHELPER_VAULT_KV_MOUNT",
        "MAILHELPER_VAULT_KV_PREFIX",
        "MAILHELPER_VAULT_TIMEOUT",
        "MAILHELPER_VAULT_STARTUP_WAIT",
        "MAILHELPER_IMAP_CA_FILE",
        "MAILHELPER_IMAP_TIMEOUT",
        "MAILHELPER_SYNC_BATCH_MESSAGES",
        "MAILHELPER_SYNC_BATCH_BYTES",
        "MAILHELPER_SYNC_LOCK_TIMEOUT",
        "MAILHELPER_DATA_KEY_CACHE_SECONDS",
        "MAILHELPER_REGISTRATION",
        "USE_LEGACY_JOBS",
        "LEGACY_FALLBACK",
        "MAILHELPER_JOB_SOFT_TIME_LIMIT",
        "MAILHELPER_JOB_TIME_LIMIT",
        "MAILHELPER_BROKER_VISIBILITY_TIMEOUT",
        "MAILHELPER_JOB_MAX_RETRIES",
        "MAILHELPER_JOB_RETRY_BACKOFF",
        "MAILHELPER_JOB_RETRY_BACKOFF_MAX",
        "MAILHELPER_SYNC_INTERVAL",
        "MAILHELPER_SYNC_JITTER",
        "MAILHELPER_SYNC_EXPIRES",
        "MAILHELPER_BROKER_TIMEOUT",
        "MAILHELPER_RECONCILE_INTERVAL",
        "MAILHELPER_PENDING_GRACE",
        "MAILHELPER_LEGACY_ORPHAN_TIMEOUT",
        "MAILHELPER_CELERY_QUEUE",
        "MAILHELPER_LEGACY_QUEUE_SIZE",
        "MAILHELPER_LEGACY_WORKERS",
        "MAILHELPER_LEGACY_RETRY_DELAYS",
        "MAILHELPER_LEGACY_DRAIN_TIMEOUT",
        "MAILHELPER_WORKER_CONCURRENCY",
        "MAILHELPER_WORKER_MAX_TASKS_PER_CHILD",
        "MAILHELPER_BEAT_SCHEDULE_FILE",
        "MAILHELPER_FLOWER_ADDRESS",
        "MAILHELPER_FLOWER_PORT",
        "MAILHELPER_FLOWER_URL_PREFIX",
        "MAILHELPER_FLOWER_DB",
    }
)


def read_config_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (# comments, optional quotes). Unknown keys are an error."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"MAILHELPER_CONFIG_FILE {path}: {exc.strerror}") from None
    values: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ConfigError(f"MAILHELPER_CONFIG_FILE {path}:{number}: expected KEY=VALUE")
        if key not in KNOWN_VARIABLES:
            raise ConfigError(f"MAILHELPER_CONFIG_FILE {path}:{number}: unknown setting {key}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the configuration. Raises ConfigError naming the bad variable.

    Sources: the settings file named by MAILHELPER_CONFIG_FILE (if any), overridden by the
    environment.

    In production the passwords and the Flask secret key are *not* filled in here: call
    `mailhelper.vault.resolve_production_secrets` (done by `mailhelper.runtime`).
    """
    env = os.environ if env is None else env
    if env.get("MAILHELPER_CONFIG_FILE"):
        env = {**read_config_file(Path(env["MAILHELPER_CONFIG_FILE"])), **env}
    mode = _choice(env, "MAILHELPER_ENV", ENVIRONMENTS, "development")
    production = mode == "production"
    data_dir = Path(env["MAILHELPER_DATA_DIR"]) if env.get("MAILHELPER_DATA_DIR") else None
    if data_dir is None:
        data_dir = default_data_dir(env)

    database_url = env.get("DATABASE_URL", "")
    if not database_url:
        if production:
            raise ConfigError("DATABASE_URL is required in production (postgresql://...)")
        database_url = f"sqlite:///{data_dir / 'mailhelper.db'}"
    # production on SQLite only for a legacy install, explicitly: one host, no workers
    # elsewhere, keys still from Vault Transit (the local key file stays refused)
    legacy_sqlite = bool(_flag(env, "MAILHELPER_LEGACY_SQLITE"))
    _check_db_url("DATABASE_URL", database_url, production=production, legacy_sqlite=legacy_sqlite)
    migrator = env.get("MAILHELPER_MIGRATOR_DATABASE_URL") or None
    if migrator:
        _check_db_url(
            "MAILHELPER_MIGRATOR_DATABASE_URL",
            migrator,
            production=production,
            legacy_sqlite=legacy_sqlite,
        )

    redis_url = env.get("REDIS_URL") or None
    if redis_url:
        if not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
        if production and make_url_password(redis_url):
            raise ConfigError("REDIS_URL must not carry a password in production")

    secret_key = env.get("SECRET_KEY", "")
    if production and secret_key:
        raise ConfigError("SECRET_KEY is for development only; production reads it from Vault KV")

    provider = _choice(
        env, "MAILHELPER_KEY_PROVIDER", KEY_PROVIDERS, "vault" if production else "local"
    )
    if production and provider == "local":
        raise ConfigError(
            "MAILHELPER_KEY_PROVIDER=local (local key file) is for development only; "
            "production must use Vault Transit"
        )
    local_key = env.get("MAILHELPER_LOCAL_KEY_FILE")
    vault = VaultSettings(
        addr=env.get("VAULT_ADDR") or None,
        cacert=env.get("VAULT_CACERT") or None,
        role_id_file=_credential_file(env, "MAILHELPER_VAULT_ROLE_ID_FILE", "vault-role-id"),
        secret_id_file=_credential_file(env, "MAILHELPER_VAULT_SECRET_ID_FILE", "vault-secret-id"),
        migrator_role_id_file=_credential_file(
            env, "MAILHELPER_VAULT_MIGRATOR_ROLE_ID_FILE", "vault-migrator-role-id"
        ),
        migrator_secret_id_file=_credential_file(
            env, "MAILHELPER_VAULT_MIGRATOR_SECRET_ID_FILE", "vault-migrator-secret-id"
        ),
        transit_mount=env.get("MAILHELPER_VAULT_TRANSIT_MOUNT") or "transit",
        transit_key=env.get("MAILHELPER_VAULT_TRANSIT_KEY") or "mailhelper",
        approle_mount=env.get("MAILHELPER_VAULT_APPROLE_MOUNT") or "approle",
        kv_mount=env.get("MAILHELPER_VAULT_KV_MOUNT") or "kv",
        kv_prefix=env.get("MAILHELPER_VAULT_KV_PREFIX") or "mailhelper",
        timeout=_number(env, "MAILHELPER_VAULT_TIMEOUT", 10.0),
        startup_wait=_seconds_or_zero(env, "MAILHELPER_VAULT_STARTUP_WAIT", 300.0),
    )
    if (provider == "vault" or production) and not vault.addr:
        raise ConfigError("VAULT_ADDR is required when the key provider is vault")
    if production and (vault.role_id_file is None or vault.secret_id_file is None):
        raise ConfigError(
            "CREDENTIALS_DIRECTORY (or MAILHELPER_VAULT_ROLE_ID_FILE and "
            "MAILHELPER_VAULT_SECRET_ID_FILE) must name the AppRole credential files"
        )

    imap_ca = env.get("MAILHELPER_IMAP_CA_FILE") or None
    if imap_ca and not Path(imap_ca).is_file():
        raise ConfigError(f"MAILHELPER_IMAP_CA_FILE names a missing file: {imap_ca}")

    if not production and not secret_key:
        secret_key = _dev_secret_key(data_dir)

    registration = _choice(
        env, "MAILHELPER_REGISTRATION", ("open", "closed"), "closed" if production else "open"
    )

    legacy_flag = _flag(env, "USE_LEGACY_JOBS")
    fallback = bool(_flag(env, "LEGACY_FALLBACK"))
    module_present = legacy_module_present()
    if not module_present:
        for name, value in (("USE_LEGACY_JOBS", legacy_flag), ("LEGACY_FALLBACK", fallback)):
            if value:
                raise ConfigError(
                    f"{name}=true but the legacy job queue (mailhelper/legacy_jobs.py) is not "
                    f"installed: phase 3 removed it. Remove {name} from the configuration "
                    "(MAILHELPER_CONFIG_FILE or the environment), or roll back to restore "
                    "the module"
                )
    # absent: the embedded default (no broker configured) keeps the legacy queue; anything
    # with a broker runs on Celery. Phase 0 writes USE_LEGACY_JOBS=true explicitly.
    use_legacy = (module_present and not redis_url) if legacy_flag is None else legacy_flag
    if not use_legacy and not redis_url:
        raise ConfigError(
            "REDIS_URL is required when jobs run on Celery "
            f"(USE_LEGACY_JOBS={'false' if legacy_flag is False else 'absent'})"
        )

    return Settings(
        env=mode,
        data_dir=data_dir,
        database_url=database_url,
        migrator_database_url=migrator,
        redis_url=redis_url,
        secret_key=secret_key,
        key_provider=provider,
        local_key_file=Path(local_key) if local_key else data_dir / "master.key",
        vault=vault,
        imap_ca_file=imap_ca,
        imap_timeout=_number(env, "MAILHELPER_IMAP_TIMEOUT", 30.0),
        sync_batch_messages=int(_number(env, "MAILHELPER_SYNC_BATCH_MESSAGES", 250, minimum=0)),
        sync_batch_bytes=int(_number(env, "MAILHELPER_SYNC_BATCH_BYTES", 8 * 1024 * 1024)),
        sync_lock_timeout=_number(env, "MAILHELPER_SYNC_LOCK_TIMEOUT", 600.0),
        data_key_cache_seconds=_number(env, "MAILHELPER_DATA_KEY_CACHE_SECONDS", 300.0),
        registration_open=registration == "open",
        use_legacy_jobs_flag=legacy_flag,
        use_legacy_jobs=use_legacy,
        legacy_fallback=fallback and not use_legacy,
        legacy_module_present=module_present,
        jobs=_job_settings(env, data_dir),
    )


def make_url_password(url: str) -> str | None:
    """The password part of a redis:// style URL, or None."""
    from urllib.parse import urlsplit

    return urlsplit(url).password


def url_with_password(url: str, password: str) -> str:
    """Insert a password into a database URL without logging it anywhere."""
    return make_url(url).set(password=password).render_as_string(hide_password=False)


def redis_url_with_password(url: str, password: str) -> str:
    """Insert a password into a redis URL (keeps an ACL user name when present)."""
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = quote(parts.username, safe="") if parts.username else ""
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
