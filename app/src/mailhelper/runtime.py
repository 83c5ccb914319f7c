"""Wires settings, Vault, database, key provider, ciphers and the sync service together."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from mailhelper.config import Settings, load_settings
from mailhelper.crypto import CipherFactory
from mailhelper.db import make_engine, make_sessionmaker
from mailhelper.keys import KeyProvider, build_key_provider
from mailhelper.sync import MailSyncService
from mailhelper.vault import (
    WEB_SECRETS,
    VaultSession,
    migrator_session,
    resolve_production_secrets,
    wait_for_vault,
)

if TYPE_CHECKING:
    from mailhelper.dispatcher import JobDispatcher


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    keys: KeyProvider
    ciphers: CipherFactory
    sync: MailSyncService

    def check_database(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    @functools.cached_property
    def jobs(self) -> JobDispatcher:
        """The job dispatcher (legacy queue / Celery, as the configuration says)."""
        from mailhelper.dispatcher import JobDispatcher

        return JobDispatcher(self)

    def dispose_connections(self) -> None:
        """Drop every pooled database connection (the job journal's too)."""
        from mailhelper import job_runs

        job_runs.dispose(self.engine)
        self.engine.dispose()

    def close(self) -> None:
        if "jobs" in self.__dict__:
            self.jobs.close()
        self.dispose_connections()


def resolve_settings(
    settings: Settings | None = None,
    *,
    migrator: bool = False,
    secrets: frozenset[str] = WEB_SECRETS,
    vault_wait: bool = True,
) -> Settings:
    """Settings with the production secrets this process needs filled in from Vault KV.
    `migrator=True` (`db upgrade`): only the migrator's database password, with the
    migrator's own AppRole credentials.

    The start-up path of every process: while Vault is sealed or unreachable it waits (up to
    MAILHELPER_VAULT_STARTUP_WAIT, see `wait_for_vault`) instead of failing, so a systemd unit
    does not restart every few seconds until an operator unseals Vault. `vault_wait=False`:
    a single attempt, for callers that must not block (a worker's main process)."""
    settings = settings or load_settings()
    if not settings.production:
        return settings
    session = migrator_session(settings.vault) if migrator else VaultSession(settings.vault)
    resolve = functools.partial(
        resolve_production_secrets, settings, session, migrator=migrator, secrets=secrets
    )
    vault = settings.vault if vault_wait else replace(settings.vault, startup_wait=0.0)
    return wait_for_vault(resolve, vault)


def build_runtime(
    settings: Settings | None = None,
    *,
    secrets: frozenset[str] = WEB_SECRETS,
    vault_wait: bool = True,
) -> Runtime:
    """Database, keys and sync service. Celery workers ask for WORKER_SECRETS only (their
    AppRole may not read the Flask key). `vault_wait`: as for `resolve_settings`."""
    settings = resolve_settings(settings, secrets=secrets, vault_wait=vault_wait)
    session = VaultSession(settings.vault) if settings.key_provider == "vault" else None
    keys = build_key_provider(settings, session)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    ciphers = CipherFactory(keys, cache_seconds=settings.data_key_cache_seconds)
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        keys=keys,
        ciphers=ciphers,
        sync=MailSyncService(sessions, ciphers, settings),
    )
