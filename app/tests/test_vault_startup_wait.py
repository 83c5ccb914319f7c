"""Start-up while Vault is sealed or down: every process (web, worker, beat, Flower,
`db upgrade`) waits in `resolve_settings` up to MAILHELPER_VAULT_STARTUP_WAIT instead of
exiting (and being restarted by systemd every 5 s); permanent errors still fail at once.

The sealing tests use a private OpenBao dev server, never the shared `bao` fixture."""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mailhelper.config import Settings, VaultSettings, load_settings
from mailhelper.errors import ConfigError, KeyProviderError, VaultUnavailableError
from mailhelper.runtime import resolve_settings
from mailhelper.vault import WORKER_SECRETS, wait_for_vault

from tests.servers import BaoServer, DovecotServer, free_port

WAIT = "MAILHELPER_VAULT_STARTUP_WAIT"
EVENTUALLY = 45.0  # seconds: generous bounds for a loaded CI machine


@pytest.fixture(scope="module")
def own_bao() -> Iterator[BaoServer]:
    """A private dev server with the app's KV secrets (the tests seal it)."""
    server = BaoServer().start()
    try:
        server.write_kv("postgresql", {"app_password": secrets.token_urlsafe(18)})
        server.write_kv("redis", {"app_password": secrets.token_urlsafe(16)})
        server.write_kv("flask", {"secret_key": secrets.token_urlsafe(32)})
        yield server
    finally:
        server.stop()


def unseal_key(bao: BaoServer) -> str:
    """The dev server prints its single unseal key after it started (in bao.log)."""
    deadline = time.monotonic() + EVENTUALLY
    while time.monotonic() < deadline:
        found = re.search(r"^Unseal Key: (\S+)$", (bao.home / "bao.log").read_text(), re.M)
        if found:
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError("the dev server printed no unseal key")


@pytest.fixture
def app_creds(own_bao: BaoServer) -> Path:
    """The app's AppRole credential files (made while the server is unsealed)."""
    return own_bao.credentials_dir()


@pytest.fixture
def sealed_bao(own_bao: BaoServer, app_creds: Path) -> Iterator[BaoServer]:
    """`own_bao`, sealed for the test and unsealed again afterwards."""
    key = unseal_key(own_bao)
    client = own_bao.client()
    client.sys.seal()
    assert client.sys.is_sealed()
    yield own_bao
    if client.sys.is_sealed():
        client.sys.submit_unseal_key(key)


def production_env(tmp_path: Path, addr: str, creds: Path, wait: float) -> dict[str, str]:
    """Production with the Vault key provider; resolve_settings reads only Vault (the
    database and broker are not contacted)."""
    return {
        "HOME": str(tmp_path),
        "MAILHELPER_ENV": "production",
        "MAILHELPER_KEY_PROVIDER": "vault",
        "DATABASE_URL": "postgresql://app@127.0.0.1:5432/mailhelper",
        "REDIS_URL": "redis://mailhelper@127.0.0.1:6379/0",
        "VAULT_ADDR": addr,
        "CREDENTIALS_DIRECTORY": str(creds),
        WAIT: f"{wait:g}",
    }


def retry_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "mailhelper.vault" and r.levelno == logging.WARNING
    ]


def timed(fn: Callable[[], object]) -> tuple[BaseException, float]:
    """The exception `fn` raises and how long it took."""
    start = time.monotonic()
    with pytest.raises(KeyProviderError) as info:
        fn()
    return info.value, time.monotonic() - start


def test_startup_waits_for_a_sealed_vault_and_goes_on_after_unseal(
    sealed_bao: BaoServer, app_creds: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailhelper")
    key = unseal_key(sealed_bao)
    settings = load_settings(production_env(tmp_path, sealed_bao.addr, app_creds, 60))
    outcome: dict[str, object] = {}

    def start_up() -> None:
        try:
            outcome["settings"] = resolve_settings(settings)
        except BaseException as exc:  # reported to the test thread
            outcome["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=start_up, daemon=True)
    thread.start()
    deadline = started + EVENTUALLY
    while not retry_warnings(caplog) and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    first = retry_warnings(caplog)
    assert first, f"no retry warning; outcome: {outcome}"
    assert "VaultDown (sealed)" in first[0]
    assert sealed_bao.addr in first[0]
    assert re.search(r"trying again in \d+\.\d s", first[0])
    time.sleep(max(0.0, started + 2.0 - time.monotonic()))
    assert thread.is_alive(), f"start-up did not wait for the sealed Vault: {outcome}"

    sealed_bao.client().sys.submit_unseal_key(key)
    thread.join(EVENTUALLY)
    assert not thread.is_alive(), "start-up did not go on after the unseal"
    assert "error" not in outcome, outcome.get("error")
    resolved = outcome["settings"]
    assert isinstance(resolved, Settings)
    kv = sealed_bao.kv
    assert resolved.secret_key == kv["flask"]["secret_key"]
    assert kv["postgresql"]["app_password"] in resolved.database_url
    assert kv["redis"]["app_password"] in (resolved.redis_url or "")
    waited = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.INFO and "available after waiting" in r.getMessage()
    ]
    assert len(waited) == 1
    assert sealed_bao.addr in waited[0]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (kv["flask"]["secret_key"], kv["postgresql"]["app_password"]):
        assert secret not in logged


@pytest.mark.parametrize("vault", ["sealed", "stopped"])
def test_startup_gives_up_at_the_deadline(
    vault: str,
    app_creds: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    caplog.set_level(logging.WARNING, logger="mailhelper")
    if vault == "sealed":
        addr, reason = request.getfixturevalue("sealed_bao").addr, "VaultDown (sealed)"
    else:
        addr, reason = f"http://127.0.0.1:{free_port()}", "ConnectionError"  # nothing listens

    def start_up(wait: float) -> Callable[[], object]:
        return lambda: resolve_settings(
            load_settings(production_env(tmp_path, addr, app_creds, wait))
        )

    error, took = timed(start_up(1.5))
    assert isinstance(error, VaultUnavailableError)
    assert 1.5 <= took < EVENTUALLY
    message = str(error)
    assert addr in message
    assert f"{WAIT}=1.5" in message
    waited = re.search(r"after waiting (\d+\.\d) s", message)
    assert waited, message
    assert 1.5 <= float(waited.group(1)) < EVENTUALLY  # the schedule: see the fake-clock test
    assert reason in message
    assert error.reason == reason
    assert retry_warnings(caplog), "gave up without a retry"

    caplog.clear()
    error, took = timed(start_up(0))
    assert isinstance(error, VaultUnavailableError)
    assert took < 1.0
    assert f"{WAIT}=0" in str(error)
    assert reason in str(error)
    assert not retry_warnings(caplog)


Breaker = Callable[[BaoServer, dict[str, str], pytest.FixtureRequest], dict[str, str]]


def _wrong_secret_id(bao: BaoServer, env: dict[str, str], _: pytest.FixtureRequest) -> dict:
    (Path(env["CREDENTIALS_DIRECTORY"]) / "vault-secret-id").write_text(secrets.token_hex(16))
    return env


def _missing_secret_id(bao: BaoServer, env: dict[str, str], _: pytest.FixtureRequest) -> dict:
    (Path(env["CREDENTIALS_DIRECTORY"]) / "vault-secret-id").unlink()
    return env


def _missing_kv_secret(bao: BaoServer, env: dict[str, str], _: pytest.FixtureRequest) -> dict:
    # `db upgrade`: the migrator may read postgresql-migrator, never written on this server
    creds = bao.credentials_dir("mailhelper-migrator", prefix="vault-migrator-")
    return {
        **env,
        "CREDENTIALS_DIRECTORY": str(creds),
        "MAILHELPER_MIGRATOR_DATABASE_URL": "postgresql://migrator@127.0.0.1:5432/mailhelper",
    }


def _policy_forbids(bao: BaoServer, env: dict[str, str], _: pytest.FixtureRequest) -> dict:
    # the worker's AppRole may not read the Flask key the web app asks for
    return {**env, "CREDENTIALS_DIRECTORY": str(bao.credentials_dir("mailhelper-worker"))}


def _untrusted_tls(bao: BaoServer, env: dict[str, str], request: pytest.FixtureRequest) -> dict:
    # a real TLS server (Dovecot's implicit TLS port) whose certificate nobody here trusts
    dovecot: DovecotServer = request.getfixturevalue("dovecot")
    return {**env, "VAULT_ADDR": f"https://127.0.0.1:{dovecot.imaps_port}"}


@pytest.mark.parametrize(
    ("break_it", "migrator", "error", "match"),
    [
        (_wrong_secret_id, False, KeyProviderError, "AppRole login refused"),
        (_missing_secret_id, False, ConfigError, "secret-id"),
        (_missing_kv_secret, True, ConfigError, "kv/mailhelper/postgresql-migrator does not"),
        (_policy_forbids, False, KeyProviderError, "kv/mailhelper/flask: Forbidden"),
        (_untrusted_tls, False, KeyProviderError, "login failed: SSLError"),
    ],
)
def test_permanent_errors_fail_at_once_despite_a_long_wait(
    break_it: Breaker,
    migrator: bool,
    error: type[Exception],
    match: str,
    own_bao: BaoServer,
    app_creds: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    caplog.set_level(logging.WARNING, logger="mailhelper")
    # 30 s: long enough to see a retry, short enough that a regression does not hang the run
    env = break_it(own_bao, production_env(tmp_path, own_bao.addr, app_creds, 30), request)
    settings = load_settings(env)
    start = time.monotonic()
    with pytest.raises(error, match=match) as info:
        resolve_settings(settings, migrator=migrator)
    assert not isinstance(info.value, VaultUnavailableError)
    assert time.monotonic() - start < 10.0  # retrying would take 30 s
    assert not retry_warnings(caplog)


def test_backoff_doubles_up_to_30_s_and_never_sleeps_past_the_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The schedule itself, on a fake clock (the real-server tests above cover the rest)."""
    caplog.set_level(logging.WARNING, logger="mailhelper")
    now = [1000.0]
    sleeps: list[float] = []
    calls: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    def sealed() -> None:
        calls.append(now[0] - 1000.0)
        raise VaultUnavailableError("Vault AppRole login failed: VaultDown (sealed)")

    vault = VaultSettings(addr="https://vault.internal:8200", startup_wait=100)
    with pytest.raises(VaultUnavailableError) as info:
        wait_for_vault(sealed, vault, clock=lambda: now[0], sleep=sleep)
    assert sleeps == [1, 2, 4, 8, 16, 30, 30, 9]
    assert calls == [0, 1, 3, 7, 15, 31, 61, 91, 100]
    assert str(info.value) == (
        "Vault at https://vault.internal:8200 is sealed or unreachable; gave up after waiting "
        "100.0 s (MAILHELPER_VAULT_STARTUP_WAIT=100): Vault AppRole login failed: "
        "VaultDown (sealed)"
    )
    assert len(retry_warnings(caplog)) == len(sleeps)

    attempts = iter([VaultUnavailableError("down"), VaultUnavailableError("down"), None])

    def comes_back() -> str:
        failure = next(attempts)
        if failure:
            raise failure
        return "resolved"

    sleeps.clear()
    assert wait_for_vault(comes_back, vault, clock=lambda: now[0], sleep=sleep) == "resolved"
    assert sleeps == [1, 2]


def test_a_worker_main_process_does_not_wait(
    sealed_bao: BaoServer, app_creds: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The hard-time-limit handler runs in the Celery worker's main process, which must not
    stall: `vault_wait=False` makes a single attempt even with a long configured wait."""
    caplog.set_level(logging.WARNING, logger="mailhelper")
    settings = load_settings(production_env(tmp_path, sealed_bao.addr, app_creds, 60))
    error, took = timed(
        lambda: resolve_settings(settings, secrets=WORKER_SECRETS, vault_wait=False)
    )
    assert isinstance(error, VaultUnavailableError)
    assert took < 5.0
    assert f"{WAIT}=0" in str(error)
    assert not retry_warnings(caplog)
