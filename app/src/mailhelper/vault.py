"""Vault/OpenBao access: AppRole login from credential files, KV v2 reads.

The role_id and secret_id come from files (systemd `LoadCredential=`), never from the
environment or the command line. The token lives only in process memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests

from mailhelper.config import (
    Settings,
    VaultSettings,
    redis_url_with_password,
    url_with_password,
)
from mailhelper.errors import ConfigError, KeyProviderError, VaultUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")

STARTUP_WAIT_SETTING = "MAILHELPER_VAULT_STARTUP_WAIT"
FIRST_RETRY_DELAY = 1.0  # seconds; doubled after each failed attempt
MAX_RETRY_DELAY = 30.0

# Failures that end without any change on our side: Vault sealed (503: waits for the unseal
# playbook) or not yet initialized (501), restarting or overloaded (500, 502, 429), not
# listening or not answering. A TLS failure (requests.SSLError, a ConnectionError) is not
# one: a wrong CA or certificate needs an operator, as a refused login or a missing secret.
_TRANSIENT_VAULT_ERRORS = (
    hvac.exceptions.VaultDown,
    hvac.exceptions.VaultNotInitialized,
    hvac.exceptions.InternalServerError,
    hvac.exceptions.BadGateway,
    hvac.exceptions.RateLimitExceeded,
)
_TRANSIENT_HTTP_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


def transient_reason(exc: BaseException) -> str | None:
    """A short reason (the exception type, `VaultDown (sealed)` for a sealed Vault) when
    `exc` is a transient Vault failure worth waiting for; None when it is permanent."""
    if isinstance(exc, requests.exceptions.SSLError):
        return None
    if isinstance(exc, hvac.exceptions.VaultDown):
        sealed = "sealed" in str(exc.args[0] if exc.args else "").lower()
        return "VaultDown (sealed)" if sealed else "VaultDown"
    if isinstance(exc, _TRANSIENT_VAULT_ERRORS + _TRANSIENT_HTTP_ERRORS):
        return type(exc).__name__
    return None


def vault_error(what: str, exc: Exception) -> KeyProviderError:
    """`<what>: <exception type>`, as VaultUnavailableError when the failure is transient."""
    reason = transient_reason(exc)
    if reason is None:
        return KeyProviderError(f"{what}: {type(exc).__name__}")
    return VaultUnavailableError(f"{what}: {reason}", reason=reason)


def _read_credential(path: Path | None, what: str, identity: str = "app") -> str:
    if path is None:
        infix = "MIGRATOR_" if identity == "migrator" else ""
        name = f"vault-migrator-{what}" if identity == "migrator" else f"vault-{what}"
        raise ConfigError(
            f"no {identity} {what} file: set CREDENTIALS_DIRECTORY (file {name}) or "
            f"MAILHELPER_VAULT_{infix}{what.upper().replace('-', '_')}_FILE"
        )
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the Vault {what} file {path}: {exc.strerror}") from None
    if not value:
        raise ConfigError(f"the Vault {what} file {path} is empty")
    return value


class VaultSession:
    """An hvac client logged in with AppRole; re-logs in when the token expires."""

    def __init__(self, settings: VaultSettings, *, token: str | None = None) -> None:
        if not settings.addr:
            raise ConfigError("VAULT_ADDR is required when the key provider is vault")
        self.settings = settings
        self._lock = threading.Lock()
        verify: bool | str = settings.cacert or True
        self.client = hvac.Client(url=settings.addr, verify=verify, timeout=settings.timeout)
        self._static_token = token
        if token:
            self.client.token = token

    def login(self) -> None:
        if self._static_token:
            return
        who = self.settings.identity
        role_id = _read_credential(self.settings.role_id_file, "role-id", who)
        secret_id = _read_credential(self.settings.secret_id_file, "secret-id", who)
        try:
            self.client.auth.approle.login(
                role_id=role_id,
                secret_id=secret_id,
                mount_point=self.settings.approle_mount,
            )
        except hvac.exceptions.InvalidRequest as exc:
            raise KeyProviderError(f"Vault AppRole login refused: {exc}") from None
        except (requests.RequestException, hvac.exceptions.VaultError) as exc:
            raise vault_error("Vault AppRole login failed", exc) from None

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run an hvac call, logging in first and once more on a 403 (expired token)."""
        for attempt in range(2):
            with self._lock:
                if not self.client.token:
                    self.login()
            try:
                return fn(*args, **kwargs)
            except hvac.exceptions.Forbidden:
                if attempt or self._static_token:
                    raise
                with self._lock:
                    self.client.token = None
        raise AssertionError("unreachable")  # pragma: no cover

    def kv_read(self, name: str) -> dict[str, str]:
        path = f"{self.settings.kv_prefix}/{name}"
        try:
            resp = self.call(
                self.client.secrets.kv.v2.read_secret_version,
                path=path,
                mount_point=self.settings.kv_mount,
                raise_on_deleted_version=True,
            )
        except hvac.exceptions.InvalidPath:
            raise ConfigError(
                f"Vault KV secret {self.settings.kv_mount}/{path} does not exist"
            ) from None
        except (requests.RequestException, hvac.exceptions.VaultError) as exc:
            what = f"cannot read Vault KV {self.settings.kv_mount}/{path}"
            raise vault_error(what, exc) from None
        return dict(resp["data"]["data"])

    def kv_field(self, name: str, key: str) -> str:
        data = self.kv_read(name)
        value = data.get(key)
        if not value:
            raise ConfigError(
                f"Vault KV secret {self.settings.kv_mount}/{self.settings.kv_prefix}/{name} "
                f"has no field {key!r}"
            )
        return str(value)


def wait_for_vault(
    fn: Callable[[], T],
    settings: VaultSettings,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`fn()`, called again while it raises VaultUnavailableError (Vault sealed, down or
    unreachable), after 1, 2, 4 ... at most 30 s, until `settings.startup_wait` seconds have
    passed (0: a single attempt). Other errors (refused login, missing secret or credential
    file) propagate at once. Past the deadline: VaultUnavailableError naming the address, the
    time waited, the last reason and MAILHELPER_VAULT_STARTUP_WAIT."""
    start = clock()
    deadline = start + settings.startup_wait
    delay = FIRST_RETRY_DELAY
    attempts = 0
    while True:
        attempts += 1
        try:
            result = fn()
        except VaultUnavailableError as exc:
            now = clock()
            if now >= deadline:
                raise _gave_up(settings, now - start, exc) from None
            pause = min(delay, deadline - now)
            _log_retry(settings, exc, waited=now - start, pause=pause)
            sleep(pause)
            delay = min(delay * 2, MAX_RETRY_DELAY)
            continue
        if attempts > 1:
            waited = clock() - start
            log.info("Vault at %s is available after waiting %.1f s", settings.addr, waited)
        return result


def _log_retry(
    settings: VaultSettings, exc: VaultUnavailableError, *, waited: float, pause: float
) -> None:
    log.warning(
        "Vault at %s is sealed or unreachable (%s); trying again in %.1f s "
        "(waited %.1f s of %g s, %s)",
        settings.addr,
        exc,
        pause,
        waited,
        settings.startup_wait,
        STARTUP_WAIT_SETTING,
    )


def _gave_up(
    settings: VaultSettings, waited: float, last: VaultUnavailableError
) -> VaultUnavailableError:
    return VaultUnavailableError(
        f"Vault at {settings.addr} is sealed or unreachable; gave up after waiting "
        f"{waited:.1f} s ({STARTUP_WAIT_SETTING}={settings.startup_wait:g}): {last}",
        reason=last.reason,
    )


# Which KV secrets each kind of process reads (its AppRole may read no more, see
# vault-policies/): the web app and the admin CLI all three, Celery workers and beat the
# database and the broker, Flower only the broker (plus its own basic-auth secret).
WEB_SECRETS = frozenset({"postgresql", "redis", "flask"})
WORKER_SECRETS = frozenset({"postgresql", "redis"})
FLOWER_SECRETS = frozenset({"redis"})
# The migrator (`db upgrade`, `migrate-sqlite --target-password-from-vault`) logs in with its
# own AppRole (VaultSettings.as_migrator) and reads only this secret: its policy
# (mailhelper-migrator) allows nothing else, and no other policy allows this path.
MIGRATOR_KV = "postgresql-migrator"
MIGRATOR_KV_FIELD = "password"


def migrator_session(settings: VaultSettings) -> VaultSession:
    """A session logged in (lazily) with the migrator's AppRole credential files."""
    return VaultSession(settings.as_migrator())


def migrator_password(session: VaultSession) -> str:
    """The PostgreSQL migrator password; `session` must carry the migrator's AppRole."""
    return session.kv_field(MIGRATOR_KV, MIGRATOR_KV_FIELD)


def resolve_production_secrets(
    settings: Settings,
    session: VaultSession,
    *,
    migrator: bool = False,
    secrets: frozenset[str] = WEB_SECRETS,
) -> Settings:
    """Fill in from Vault KV the secrets this process needs, production only.

    `migrator=False`: the ones in `secrets`, read with the process's own AppRole: the
    PostgreSQL app password (`postgresql`), the broker password (`redis`) and the Flask
    secret key (`flask`). Settings for secrets not asked for stay as they were.
    `migrator=True` (`db upgrade`): only the migrator's database URL with its password, read
    with the migrator's AppRole (`session` from `migrator_session`); `secrets` is ignored,
    nothing else is read (no broker, no Flask key, no Transit)."""
    if not settings.production:
        return settings
    if migrator:
        return _resolve_migrator(settings, session)
    unknown = secrets - WEB_SECRETS
    if unknown:
        raise ConfigError(f"unknown secret kinds: {', '.join(sorted(unknown))}")
    overrides: dict[str, str | None] = {}
    if "postgresql" in secrets and not settings.database_url.startswith("sqlite"):
        # a legacy SQLite install has no password
        overrides["database_url"] = url_with_password(
            settings.database_url, session.kv_field("postgresql", "app_password")
        )
    if "redis" in secrets and settings.redis_url:
        overrides["redis_url"] = redis_url_with_password(
            settings.redis_url, session.kv_field("redis", "app_password")
        )
    if "flask" in secrets:
        overrides["secret_key"] = session.kv_field("flask", "secret_key")
    return settings.with_overrides(**overrides) if overrides else settings


def _resolve_migrator(settings: Settings, session: VaultSession) -> Settings:
    base_url = settings.database_url
    if settings.migrator_database_url:
        base_url = settings.migrator_database_url
    elif not base_url.startswith("sqlite"):
        raise ConfigError(
            "MAILHELPER_MIGRATOR_DATABASE_URL is required for `mailhelper db upgrade` in production"
        )
    if base_url.startswith("sqlite"):  # a legacy SQLite install has no password
        return (
            settings.with_overrides(database_url=base_url)
            if base_url != settings.database_url
            else settings
        )
    return settings.with_overrides(
        database_url=url_with_password(base_url, migrator_password(session))
    )
