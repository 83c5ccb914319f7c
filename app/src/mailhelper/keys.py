"""Key providers: who holds the master key and wraps the per-user data keys.

Two implementations behind one interface:

* `VaultTransitProvider` - the master key lives in Vault Transit (derived, non-exportable);
  Vault generates each data key and returns it wrapped under the user's derived key.
* `LocalKeyFileProvider` - development only: a master key file on local disk. Refused in
  production.

A *context* is the stable user identifier; the wrapped key only unwraps with the same one.
"""

from __future__ import annotations

import abc
import base64
import json
import os
import secrets
import threading
from pathlib import Path

import hvac.exceptions
import requests
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mailhelper.config import Settings
from mailhelper.errors import ConfigError, KeyProviderError
from mailhelper.vault import VaultSession

DATA_KEY_BYTES = 32


class KeyProvider(abc.ABC):
    """Generates, unwraps, rotates and rewraps per-user data keys."""

    name: str = "abstract"

    @abc.abstractmethod
    def generate_data_key(self, context: bytes) -> tuple[bytes, str]:
        """Return (plaintext data key, wrapped key to store)."""

    @abc.abstractmethod
    def unwrap(self, wrapped: str, context: bytes) -> bytes:
        """Return the plaintext data key of a stored wrapped key."""

    @abc.abstractmethod
    def rotate(self) -> None:
        """Create a new master key version; old versions still unwrap."""

    @abc.abstractmethod
    def rewrap(self, wrapped: str, context: bytes) -> str:
        """Re-wrap under the newest master key version without exposing the data key."""

    @abc.abstractmethod
    def check(self) -> None:
        """Raise KeyProviderError when the provider is not usable (health check)."""


class LocalKeyFileProvider(KeyProvider):
    """Master keys in a JSON file (mode 0600). For development and tests only."""

    name = "local"
    _PREFIX = "local"

    def __init__(self, path: Path, *, production: bool = False) -> None:
        if production:
            raise ConfigError(
                "the local key file provider is for development only and is refused when "
                "MAILHELPER_ENV=production; use Vault Transit (MAILHELPER_KEY_PROVIDER=vault)"
            )
        self.path = path
        self._lock = threading.Lock()
        self._keys: dict[int, bytes] = {}
        self._load_or_create()

    def _load_or_create(self) -> None:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._keys = {1: secrets.token_bytes(32)}
            self._save(create=True)
            return
        try:
            doc = json.loads(self.path.read_text())
            self._keys = {int(v): base64.b64decode(k) for v, k in doc["keys"].items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"MAILHELPER_LOCAL_KEY_FILE {self.path} is unreadable or corrupt: {exc}"
            ) from None
        if not self._keys or any(len(k) != 32 for k in self._keys.values()):
            raise ConfigError(f"MAILHELPER_LOCAL_KEY_FILE {self.path} holds no valid key")

    def _save(self, *, create: bool = False) -> None:
        doc = {"keys": {str(v): base64.b64encode(k).decode() for v, k in self._keys.items()}}
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
        os.replace(tmp, self.path)

    @property
    def latest(self) -> int:
        return max(self._keys)

    @staticmethod
    def _aad(context: bytes) -> bytes:
        return b"mailhelper-datakey\x00" + context

    def _wrap(self, version: int, data_key: bytes, context: bytes) -> str:
        nonce = secrets.token_bytes(12)
        ct = AESGCM(self._keys[version]).encrypt(nonce, data_key, self._aad(context))
        return f"{self._PREFIX}:v{version}:{base64.b64encode(nonce + ct).decode()}"

    def generate_data_key(self, context: bytes) -> tuple[bytes, str]:
        data_key = secrets.token_bytes(DATA_KEY_BYTES)
        return data_key, self._wrap(self.latest, data_key, context)

    def unwrap(self, wrapped: str, context: bytes) -> bytes:
        try:
            prefix, version_s, blob_s = wrapped.split(":", 2)
            if prefix != self._PREFIX or not version_s.startswith("v"):
                raise ValueError("not a local wrapped key")
            key = self._keys[int(version_s[1:])]
            blob = base64.b64decode(blob_s)
            return AESGCM(key).decrypt(blob[:12], blob[12:], self._aad(context))
        except (ValueError, KeyError, InvalidTag) as exc:
            raise KeyProviderError(f"cannot unwrap data key: {type(exc).__name__}") from None

    def rotate(self) -> None:
        with self._lock:
            self._keys[self.latest + 1] = secrets.token_bytes(32)
            self._save()

    def rewrap(self, wrapped: str, context: bytes) -> str:
        return self._wrap(self.latest, self.unwrap(wrapped, context), context)

    def check(self) -> None:
        if not self.path.exists():
            raise KeyProviderError(f"local key file {self.path} is missing")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class VaultTransitProvider(KeyProvider):
    """Data keys from Vault Transit `datakey/plaintext`; the master key never leaves Vault."""

    name = "vault"

    def __init__(self, session: VaultSession) -> None:
        self.session = session
        self.mount = session.settings.transit_mount
        self.key = session.settings.transit_key
        self.transit = session.client.secrets.transit

    def _call(self, what: str, fn: object, **kwargs: object) -> dict:
        try:
            return self.session.call(fn, name=self.key, mount_point=self.mount, **kwargs)
        except hvac.exceptions.InvalidRequest as exc:
            raise KeyProviderError(f"Vault Transit {what} refused: {exc}") from None
        except (requests.RequestException, hvac.exceptions.VaultError) as exc:
            raise KeyProviderError(
                f"Vault Transit {what} failed ({self.mount}/{self.key}): {type(exc).__name__}"
            ) from None

    def generate_data_key(self, context: bytes) -> tuple[bytes, str]:
        resp = self._call(
            "datakey",
            self.transit.generate_data_key,
            key_type="plaintext",
            context=_b64(context),
        )
        data = resp["data"]
        return base64.b64decode(data["plaintext"]), data["ciphertext"]

    def unwrap(self, wrapped: str, context: bytes) -> bytes:
        resp = self._call(
            "decrypt", self.transit.decrypt_data, ciphertext=wrapped, context=_b64(context)
        )
        return base64.b64decode(resp["data"]["plaintext"])

    def rotate(self) -> None:
        self._call("rotate", self.transit.rotate_key)

    def rewrap(self, wrapped: str, context: bytes) -> str:
        resp = self._call(
            "rewrap", self.transit.rewrap_data, ciphertext=wrapped, context=_b64(context)
        )
        return resp["data"]["ciphertext"]

    def check(self) -> None:
        try:
            self.session.call(self.session.client.auth.token.lookup_self)
        except (requests.RequestException, hvac.exceptions.VaultError) as exc:
            raise KeyProviderError(f"Vault is not usable: {type(exc).__name__}") from None


def build_key_provider(settings: Settings, session: VaultSession | None = None) -> KeyProvider:
    """The provider the settings ask for (the local file is refused in production)."""
    if settings.key_provider == "local":
        assert settings.local_key_file is not None  # noqa: S101 - set by load_settings
        return LocalKeyFileProvider(settings.local_key_file, production=settings.production)
    if session is None:
        session = VaultSession(settings.vault)
    return VaultTransitProvider(session)
