"""Configuration: the embedded default, validation errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from mailhelper.config import load_settings, redis_url_with_password, url_with_password
from mailhelper.errors import ConfigError
from mailhelper.keys import LocalKeyFileProvider, build_key_provider
from mailhelper.vault import resolve_production_secrets


def test_no_configuration_gives_sqlite_and_local_key_in_xdg_dir(tmp_path: Path) -> None:
    s = load_settings({"HOME": str(tmp_path)})
    data = tmp_path / ".local/share/mailhelper"
    assert s.env == "development"
    assert s.database_url == f"sqlite:///{data / 'mailhelper.db'}"
    assert s.key_provider == "local"
    assert s.local_key_file == data / "master.key"
    key = (data / "secret_key").read_text()
    assert len(key) > 40
    # the development secret key persists across restarts
    assert load_settings({"HOME": str(tmp_path)}).secret_key == key
    assert (
        load_settings({"XDG_DATA_HOME": str(tmp_path / "x")}).data_dir == tmp_path / "x/mailhelper"
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"MAILHELPER_ENV": "staging"}, "MAILHELPER_ENV"),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
        ({"DATABASE_URL": "::::"}, "DATABASE_URL"),
        ({"MAILHELPER_MIGRATOR_DATABASE_URL": "oracle://x"}, "MAILHELPER_MIGRATOR_DATABASE_URL"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"MAILHELPER_KEY_PROVIDER": "kms"}, "MAILHELPER_KEY_PROVIDER"),
        ({"MAILHELPER_KEY_PROVIDER": "vault"}, "VAULT_ADDR"),
        ({"MAILHELPER_IMAP_TIMEOUT": "soon"}, "MAILHELPER_IMAP_TIMEOUT"),
        ({"MAILHELPER_IMAP_TIMEOUT": "-1"}, "MAILHELPER_IMAP_TIMEOUT"),
        ({"MAILHELPER_IMAP_CA_FILE": "/nonexistent/ca.pem"}, "MAILHELPER_IMAP_CA_FILE"),
        ({"MAILHELPER_REGISTRATION": "maybe"}, "MAILHELPER_REGISTRATION"),
    ],
)
def test_bad_development_config_names_the_variable(
    tmp_path: Path, env: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings({"HOME": str(tmp_path), **env})


PROD = {
    "MAILHELPER_ENV": "production",
    "DATABASE_URL": "postgresql://mailhelper_app@db.internal/mailhelper",
    "VAULT_ADDR": "https://vault.internal:8200",
    "CREDENTIALS_DIRECTORY": "/run/credentials/mail-helper.service",
}


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"DATABASE_URL": ""}, "DATABASE_URL is required"),
        ({"DATABASE_URL": "sqlite:///x.db"}, "DATABASE_URL must point to PostgreSQL"),
        ({"DATABASE_URL": "postgresql://app:secret@db/x"}, "DATABASE_URL must not carry"),
        ({"REDIS_URL": "redis://:secret@r:6379/0"}, "REDIS_URL must not carry"),
        ({"SECRET_KEY": "x" * 40}, "SECRET_KEY is for development only"),
        ({"MAILHELPER_KEY_PROVIDER": "local"}, "MAILHELPER_KEY_PROVIDER=local"),
        ({"VAULT_ADDR": ""}, "VAULT_ADDR"),
        ({"CREDENTIALS_DIRECTORY": ""}, "CREDENTIALS_DIRECTORY"),
        (
            {"DATABASE_URL": "sqlite:///x.db", "MAILHELPER_LEGACY_SQLITE": "false"},
            "DATABASE_URL must point to PostgreSQL",
        ),
        (
            {
                "DATABASE_URL": "sqlite:///x.db",
                "MAILHELPER_LEGACY_SQLITE": "true",
                "MAILHELPER_KEY_PROVIDER": "local",
            },
            "MAILHELPER_KEY_PROVIDER=local",
        ),
    ],
)
def test_production_refuses_development_sources(
    tmp_path: Path, change: dict[str, str], variable: str
) -> None:
    env = {"HOME": str(tmp_path), **PROD, **change}
    with pytest.raises(ConfigError, match=variable):
        load_settings(env)


def test_production_settings_defaults(tmp_path: Path) -> None:
    s = load_settings({"HOME": str(tmp_path), **PROD})
    assert s.production
    assert s.key_provider == "vault"
    assert s.secret_key == ""  # filled in from Vault KV at start
    assert not s.registration_open  # operators create users with the CLI
    assert s.vault.role_id_file == Path(PROD["CREDENTIALS_DIRECTORY"]) / "vault-role-id"
    assert s.vault.transit_mount == "transit"
    assert s.vault.kv_mount == "kv"
    s2 = load_settings(
        {
            "HOME": str(tmp_path),
            **PROD,
            "MAILHELPER_VAULT_ROLE_ID_FILE": "/r",
            "MAILHELPER_VAULT_SECRET_ID_FILE": "/s",
            "MAILHELPER_VAULT_TRANSIT_KEY": "other",
        }
    )
    assert (str(s2.vault.role_id_file), str(s2.vault.secret_id_file)) == ("/r", "/s")
    assert s2.vault.transit_key == "other"
    assert not (tmp_path / ".local").exists()  # production writes nothing locally


def test_vault_startup_wait_defaults_to_300_s_allows_0_and_refuses_negative(
    tmp_path: Path,
) -> None:
    env = {"HOME": str(tmp_path), **PROD}
    assert load_settings(env).vault.startup_wait == 300
    assert load_settings({**env, "MAILHELPER_VAULT_STARTUP_WAIT": ""}).vault.startup_wait == 300
    assert load_settings({**env, "MAILHELPER_VAULT_STARTUP_WAIT": "0"}).vault.startup_wait == 0
    assert load_settings({**env, "MAILHELPER_VAULT_STARTUP_WAIT": "2.5"}).vault.startup_wait == 2.5
    for bad in ("-1", "-0.5", "soon", "nan"):
        with pytest.raises(ConfigError, match="MAILHELPER_VAULT_STARTUP_WAIT"):
            load_settings({**env, "MAILHELPER_VAULT_STARTUP_WAIT": bad})
    # a known setting of the config file the mail_app role writes
    conf = tmp_path / "mailhelper.conf"
    conf.write_text("MAILHELPER_VAULT_STARTUP_WAIT=45\n")
    s = load_settings({**env, "MAILHELPER_CONFIG_FILE": str(conf)})
    assert s.vault.startup_wait == 45
    assert s.vault.as_migrator().startup_wait == 45  # `db upgrade` waits as long


def test_local_key_file_refused_in_production(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="development only"):
        LocalKeyFileProvider(tmp_path / "k", production=True)
    s = load_settings({"HOME": str(tmp_path)})
    with pytest.raises(ConfigError, match="development only"):
        build_key_provider(s.with_overrides(env="production"))


def test_url_helpers_insert_passwords() -> None:
    assert url_with_password("postgresql://app@db:5432/x", "p@ss/w") == (
        "postgresql://app:p%40ss%2Fw@db:5432/x"
    )
    assert redis_url_with_password("redis://app@r:6379/0", "a:b") == "redis://app:a%3Ab@r:6379/0"
    assert redis_url_with_password("redis://r/1", "pw") == "redis://:pw@r/1"


def test_config_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    conf = tmp_path / "mailhelper.conf"
    conf.write_text(
        "# written by the mail_app role\n\n"
        'DATABASE_URL="sqlite:///from-file.db"\n'
        "MAILHELPER_IMAP_TIMEOUT = 12\n"
        "MAILHELPER_REGISTRATION='closed'\n"
    )
    env = {"HOME": str(tmp_path), "MAILHELPER_CONFIG_FILE": str(conf)}
    s = load_settings(env)
    assert s.database_url == "sqlite:///from-file.db"
    assert s.imap_timeout == 12
    assert not s.registration_open
    assert load_settings({**env, "MAILHELPER_IMAP_TIMEOUT": "5"}).imap_timeout == 5


@pytest.mark.parametrize(
    ("content", "message"),
    [("NOT_A_SETTING=1\n", "unknown setting NOT_A_SETTING"), ("just words\n", ":1: expected")],
)
def test_bad_config_file_names_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    conf = tmp_path / "c"
    conf.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_settings({"HOME": str(tmp_path), "MAILHELPER_CONFIG_FILE": str(conf)})
    with pytest.raises(ConfigError, match="MAILHELPER_CONFIG_FILE"):
        load_settings({"HOME": str(tmp_path), "MAILHELPER_CONFIG_FILE": str(tmp_path / "none")})


def test_config_file_cannot_smuggle_secrets_into_production(tmp_path: Path) -> None:
    conf = tmp_path / "c"
    conf.write_text("SECRET_KEY=abc\n")
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        load_settings({"HOME": str(tmp_path), **PROD, "MAILHELPER_CONFIG_FILE": str(conf)})


def test_legacy_orphan_timeout_must_outlast_the_legacy_retry_delays(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "MAILHELPER_LEGACY_RETRY_DELAYS": "30,120,600"}
    assert load_settings(env).jobs.legacy_orphan_timeout == 21600
    assert load_settings({**env, "MAILHELPER_LEGACY_ORPHAN_TIMEOUT": "751"}).jobs
    with pytest.raises(ConfigError, match="MAILHELPER_LEGACY_ORPHAN_TIMEOUT"):
        load_settings({**env, "MAILHELPER_LEGACY_ORPHAN_TIMEOUT": "750"})


def test_legacy_sqlite_install_in_production_keeps_vault_and_no_password(tmp_path: Path) -> None:
    """A legacy SQLite install runs in production mode until it is migrated: keys and the
    Flask key from Vault, and no database password to fill in."""
    env = {
        "HOME": str(tmp_path),
        **PROD,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}",
        "MAILHELPER_LEGACY_SQLITE": "true",
    }
    s = load_settings(env)
    assert s.production
    assert s.key_provider == "vault"

    class KV:
        def kv_field(self, name: str, key: str) -> str:
            assert (name, key) != ("postgresql", "app_password")
            assert (name, key) != ("postgresql", "migrator_password")
            return f"{name}-{key}"

    resolved = resolve_production_secrets(s, KV())  # type: ignore[arg-type]
    assert resolved.database_url == env["DATABASE_URL"]
    assert resolved.secret_key == "flask-secret_key"

    class NoKV:
        def kv_field(self, name: str, key: str) -> str:
            raise AssertionError(f"the migrator of a SQLite install reads nothing ({name})")

    resolved = resolve_production_secrets(s, NoKV(), migrator=True)  # type: ignore[arg-type]
    assert resolved.database_url == env["DATABASE_URL"]
    assert resolved.secret_key != "flask-secret_key"
