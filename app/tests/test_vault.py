"""Vault/OpenBao: Transit envelope keys, AppRole from credential files, production secrets
from KV (PostgreSQL passwords, Flask key), and key rotation with rewrap."""

from __future__ import annotations

import hashlib
import io
import secrets
from pathlib import Path

import hvac.exceptions
import pytest
from mailhelper import cli
from mailhelper.config import load_settings
from mailhelper.crypto import CipherFactory, key_context
from mailhelper.errors import ConfigError, KeyProviderError
from mailhelper.keys import VaultTransitProvider
from mailhelper.mailbox import raw_bytes
from mailhelper.models import Message, User
from mailhelper.runtime import build_runtime
from mailhelper.vault import MIGRATOR_KV, VaultSession, migrator_password, migrator_session
from mailhelper.web import create_app
from sqlalchemy import select

from tests.conftest import make_mailbox
from tests.mailgen import message
from tests.servers import BaoServer, DovecotServer, PostgresServer


def vault_env(bao: BaoServer, creds: Path) -> dict[str, str]:
    return {"VAULT_ADDR": bao.addr, "CREDENTIALS_DIRECTORY": str(creds)}


def test_transit_provider_wraps_with_derived_context(bao: BaoServer, tmp_path: Path) -> None:
    settings = load_settings(
        {
            "HOME": str(tmp_path),
            "MAILHELPER_KEY_PROVIDER": "vault",
            **vault_env(bao, bao.credentials_dir()),
        }
    )
    provider = VaultTransitProvider(VaultSession(settings.vault))
    dk, wrapped = provider.generate_data_key(key_context("alice"))
    assert len(dk) == 32
    assert wrapped.startswith("vault:v")
    assert provider.unwrap(wrapped, key_context("alice")) == dk
    with pytest.raises(KeyProviderError):
        provider.unwrap(wrapped, key_context("bob"))  # derived key: other user, other key
    provider.check()
    with pytest.raises(KeyProviderError, match="rotate"):
        provider.rotate()  # the app identity may not rotate (policy)


def test_approle_login_errors_are_clear(bao: BaoServer, tmp_path: Path) -> None:
    creds = bao.credentials_dir()
    (creds / "vault-secret-id").unlink()
    settings = load_settings(
        {"HOME": str(tmp_path), "MAILHELPER_KEY_PROVIDER": "vault", **vault_env(bao, creds)}
    )
    with pytest.raises(ConfigError, match="secret-id"):
        VaultSession(settings.vault).login()
    (creds / "vault-secret-id").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        VaultSession(settings.vault).login()
    (creds / "vault-secret-id").write_text(secrets.token_hex(16))
    with pytest.raises(KeyProviderError, match="AppRole"):
        VaultSession(settings.vault).login()
    dead = load_settings(
        {
            "HOME": str(tmp_path),
            "MAILHELPER_KEY_PROVIDER": "vault",
            "VAULT_ADDR": "http://127.0.0.1:9",
            "CREDENTIALS_DIRECTORY": str(bao.credentials_dir()),
        }
    )
    with pytest.raises(KeyProviderError, match="login failed"):
        VaultSession(dead.vault).login()


@pytest.fixture
def production(
    pg: PostgresServer,
    bao: BaoServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    dovecot: DovecotServer,
) -> dict[str, str]:
    """A production environment: roles in PostgreSQL, their passwords only in Vault KV."""
    tag = secrets.token_hex(4)
    app_pw, mig_pw = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    app_role, mig_role, dbname = f"app_{tag}", f"migrator_{tag}", f"prod_{tag}"
    pg.execute(f"CREATE ROLE {mig_role} LOGIN PASSWORD '{mig_pw}'")
    pg.execute(f"CREATE ROLE {app_role} LOGIN PASSWORD '{app_pw}'")
    pg.execute(f"CREATE DATABASE {dbname} OWNER {mig_role}")
    pg.execute(
        f"REVOKE CREATE ON SCHEMA public FROM PUBLIC; GRANT ALL ON SCHEMA public TO {mig_role}",
        dbname,
    )
    pg.execute(f"GRANT USAGE ON SCHEMA public TO {app_role}", dbname)
    pg.execute(
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {mig_role} IN SCHEMA public "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app_role}; "
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {mig_role} IN SCHEMA public "
        f"GRANT USAGE, SELECT ON SEQUENCES TO {app_role}",
        dbname,
    )
    bao.write_kv("postgresql", {"app_password": app_pw})
    bao.write_kv("postgresql-migrator", {"password": mig_pw})
    bao.write_kv("flask", {"secret_key": secrets.token_urlsafe(32)})
    bao.write_kv("redis", {"app_password": secrets.token_urlsafe(16)})
    env = {
        "HOME": str(tmp_path),
        "MAILHELPER_ENV": "production",
        "DATABASE_URL": f"postgresql://{app_role}@127.0.0.1:{pg.port}/{dbname}",
        "MAILHELPER_MIGRATOR_DATABASE_URL": f"postgresql://{mig_role}@127.0.0.1:{pg.port}/{dbname}",
        "REDIS_URL": "redis://mailhelper@127.0.0.1:6379/0",
        "MAILHELPER_IMAP_CA_FILE": str(dovecot.ca_file),
        **vault_env(bao, bao.credentials_dir()),
    }
    for key in ("SECRET_KEY", "MAILHELPER_DATA_DIR", "MAILHELPER_KEY_PROVIDER"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def run_cli(args: list[str], stdin: str = "", monkeypatch: pytest.MonkeyPatch | None = None) -> int:
    assert monkeypatch is not None
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return cli.main(args)


def test_production_end_to_end_with_rotation(
    production: dict[str, str],
    bao: BaoServer,
    dovecot: DovecotServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # the migration unit has only the migrator's AppRole credentials
    monkeypatch.setenv(
        "CREDENTIALS_DIRECTORY",
        str(bao.credentials_dir("mailhelper-migrator", prefix="vault-migrator-")),
    )
    assert run_cli(["db", "upgrade"], monkeypatch=monkeypatch) == 0
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", production["CREDENTIALS_DIRECTORY"])
    rt = build_runtime()
    try:
        assert rt.settings.secret_key == bao.kv["flask"]["secret_key"]
        assert bao.kv["redis"]["app_password"] in (rt.settings.redis_url or "")
        assert rt.keys.name == "vault"
        box = make_mailbox(rt, dovecot, tls="implicit")
        raws = [message(i, 4000) for i in range(4)]
        for raw in raws:
            box.append(raw)
        assert rt.sync.sync_account(box.account_id).new == 4
        with rt.sessions() as s:
            before = s.scalar(select(User.wrapped_key).where(User.id == box.user_id))
        app = create_app(rt)
        assert app.config["SECRET_KEY"] == bao.kv["flask"]["secret_key"]
        assert app.test_client().get("/health").status_code == 200
    finally:
        rt.close()
    assert before.startswith("vault:v1:")

    # the app identity may not rotate; the rotator identity (its own AppRole) may
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(bao.credentials_dir("rotator")))
    capsys.readouterr()
    assert run_cli(["rotate-keys"], monkeypatch=monkeypatch) == 0
    assert "rewrapped 1 of 1" in capsys.readouterr().out
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(bao.credentials_dir()))
    rt = build_runtime()
    try:
        with rt.sessions() as s:
            user = s.get(User, box.user_id)
            assert user.wrapped_key.startswith("vault:v2:")
            fresh = CipherFactory(rt.keys)
            msgs = s.scalars(select(Message).where(Message.account_id == box.account_id)).all()
            got = sorted(hashlib.sha256(raw_bytes(fresh, user, m)).hexdigest() for m in msgs)
        assert got == sorted(hashlib.sha256(r).hexdigest() for r in raws)
    finally:
        rt.close()


def test_production_missing_kv_secret_is_named(
    production: dict[str, str],
    bao: BaoServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MAILHELPER_VAULT_KV_PREFIX", "nothing-here")
    assert run_cli(["list-messages", "--account", "1"], monkeypatch=monkeypatch) == 1
    assert "Vault KV kv/nothing-here/postgresql" in capsys.readouterr().err
    monkeypatch.delenv("MAILHELPER_VAULT_KV_PREFIX")
    monkeypatch.delenv("MAILHELPER_MIGRATOR_DATABASE_URL")
    assert run_cli(["db", "upgrade"], monkeypatch=monkeypatch) == 1
    assert "MAILHELPER_MIGRATOR_DATABASE_URL" in capsys.readouterr().err


def test_each_process_reads_only_the_secrets_its_policy_allows(
    production: dict[str, str],
    bao: BaoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Workers and beat (mailhelper-worker) and Flower (mailhelper-flower) start with the
    bundle's own policies: they ask Vault only for what those allow."""
    from mailhelper.processes import flower_credentials
    from mailhelper.runtime import resolve_settings
    from mailhelper.vault import FLOWER_SECRETS, WORKER_SECRETS

    bao.write_kv("flower", {"username": "flower", "password": "flower-test-pw"})
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(bao.credentials_dir("mailhelper-worker")))
    with pytest.raises(KeyProviderError, match="kv/mailhelper/flask"):
        resolve_settings()  # everything the web app reads: the worker may not
    worker = resolve_settings(secrets=WORKER_SECRETS)
    assert bao.kv["postgresql"]["app_password"] in worker.database_url
    assert bao.kv["redis"]["app_password"] in (worker.redis_url or "")
    assert worker.secret_key != bao.kv["flask"]["secret_key"]
    rt = build_runtime(worker, secrets=WORKER_SECRETS)  # what a worker process builds
    try:
        rt.check_database()
        assert rt.keys.name == "vault"
    finally:
        rt.close()

    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(bao.credentials_dir("mailhelper-flower")))
    with pytest.raises(KeyProviderError, match="kv/mailhelper/postgresql"):
        resolve_settings(secrets=WORKER_SECRETS)
    flower = resolve_settings(secrets=FLOWER_SECRETS)
    assert bao.kv["redis"]["app_password"] in (flower.redis_url or "")
    assert bao.kv["postgresql"]["app_password"] not in flower.database_url
    assert flower_credentials(flower) == "flower:flower-test-pw"


def test_only_the_migrator_approle_reads_the_migrator_password(
    production: dict[str, str], bao: BaoServer
) -> None:
    """Policies of vault-policies/: the migrator password has its own KV path that only
    mailhelper-migrator may read, and mailhelper-migrator may read nothing else."""
    mig_pw = bao.kv["postgresql-migrator"]["password"]
    settings = load_settings()
    for role in ("mailhelper-app", "mailhelper-worker", "mailhelper-flower"):
        other = load_settings(
            {**production, "CREDENTIALS_DIRECTORY": str(bao.credentials_dir(role))}
        )
        session = VaultSession(other.vault)
        with pytest.raises(KeyProviderError, match="postgresql-migrator: Forbidden"):
            session.kv_read(MIGRATOR_KV)
        session.login()
        assert session.client.token
        with pytest.raises(hvac.exceptions.Forbidden):  # permission denied, straight from Vault
            session.client.secrets.kv.v2.read_secret_version(
                path=f"mailhelper/{MIGRATOR_KV}", mount_point="kv", raise_on_deleted_version=True
            )
    # the app's own secret no longer carries the migrator password
    app = VaultSession(settings.vault)
    assert mig_pw not in app.kv_read("postgresql").values()

    migrator_dir = bao.credentials_dir("mailhelper-migrator", prefix="vault-migrator-")
    mig = load_settings({**production, "CREDENTIALS_DIRECTORY": str(migrator_dir)})
    session = migrator_session(mig.vault)
    assert migrator_password(session) == mig_pw
    for name in ("postgresql", "redis", "flask", "flower"):
        with pytest.raises(KeyProviderError, match=f"kv/mailhelper/{name}: Forbidden"):
            session.kv_read(name)
    transit = VaultTransitProvider(session)
    with pytest.raises(KeyProviderError):
        transit.generate_data_key(key_context("alice"))
    _, wrapped = VaultTransitProvider(app).generate_data_key(key_context("alice"))
    with pytest.raises(KeyProviderError):
        transit.unwrap(wrapped, key_context("alice"))


def test_db_upgrade_logs_in_with_the_migrator_approle(
    production: dict[str, str],
    bao: BaoServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mailhelper.runtime import resolve_settings
    from mailhelper.sqlite_migration.command import _with_vault_password

    target = production["MAILHELPER_MIGRATOR_DATABASE_URL"]
    mig_pw = bao.kv["postgresql-migrator"]["password"]
    # the app's credentials only (the web unit's): no migrator credential file
    capsys.readouterr()
    assert run_cli(["db", "upgrade"], monkeypatch=monkeypatch) == 1
    assert "vault-migrator-role-id" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="vault-migrator-role-id"):
        _with_vault_password(target)

    # the app's AppRole behind the migrator's file names: Vault says no
    wrong = bao.credentials_dir("mailhelper-app", prefix="vault-migrator-")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(wrong))
    assert run_cli(["db", "upgrade"], monkeypatch=monkeypatch) == 1
    assert "kv/mailhelper/postgresql-migrator: Forbidden" in capsys.readouterr().err

    # the migrator's credentials only (the migration unit's): reads its password, nothing else
    migrator_dir = bao.credentials_dir("mailhelper-migrator", prefix="vault-migrator-")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(migrator_dir))
    resolved = resolve_settings(migrator=True)
    assert mig_pw in resolved.database_url
    assert bao.kv["postgresql"]["app_password"] not in resolved.database_url
    assert resolved.secret_key != bao.kv["flask"]["secret_key"]
    assert bao.kv["redis"]["app_password"] not in (resolved.redis_url or "")
    assert _with_vault_password(target).startswith(target.replace("@", f":{mig_pw}@", 1))
    assert run_cli(["db", "upgrade"], monkeypatch=monkeypatch) == 0
    assert mig_pw not in capsys.readouterr().out
