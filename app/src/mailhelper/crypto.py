"""Content encryption: AES-256-GCM under each user's data key.

Every value carries associated data naming its user, field and row, so a ciphertext copied
to another row, field or user fails authentication. Stored format: version byte 0x01,
12-byte random nonce, ciphertext with 16-byte tag.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mailhelper.errors import DecryptionError
from mailhelper.keys import KeyProvider

FORMAT_V1 = b"\x01"


def key_context(user_key_id: str) -> bytes:
    """The Transit derivation context of a user (stable, independent of the e-mail)."""
    return f"mailhelper-user:{user_key_id}".encode()


def associated_data(user_id: int, field: str, row: tuple[object, ...]) -> bytes:
    row_part = "/".join(str(part) for part in row)
    return f"mh1|user={user_id}|field={field}|row={row_part}".encode()


class _NoncePool:
    """96-bit random nonces drawn from the OS CSPRNG a few thousand at a time (one
    getrandom call per 4,096 nonces instead of one per value)."""

    def __init__(self, count: int = 4096) -> None:
        self._count = count
        self._buf = b""
        self._pos = 0
        self._lock = threading.Lock()

    def take(self) -> bytes:
        with self._lock:
            if self._pos >= len(self._buf):
                self._buf = secrets.token_bytes(12 * self._count)
                self._pos = 0
            nonce = self._buf[self._pos : self._pos + 12]
            self._pos += 12
            return nonce


_NONCES = _NoncePool()


class UserCipher:
    """Encrypts and decrypts one user's fields."""

    __slots__ = ("_aead", "user_id")

    def __init__(self, user_id: int, data_key: bytes) -> None:
        self.user_id = user_id
        self._aead = AESGCM(data_key)

    def encrypt(self, field: str, value: bytes, *row: object) -> bytes:
        nonce = _NONCES.take()
        aad = associated_data(self.user_id, field, row)
        return FORMAT_V1 + nonce + self._aead.encrypt(nonce, value, aad)

    def decrypt(self, field: str, blob: bytes, *row: object) -> bytes:
        if not blob or blob[:1] != FORMAT_V1 or len(blob) < 29:
            raise DecryptionError(f"{field}: not a mailhelper ciphertext")
        aad = associated_data(self.user_id, field, row)
        try:
            return self._aead.decrypt(blob[1:13], blob[13:], aad)
        except InvalidTag:
            raise DecryptionError(f"{field}: authentication failed") from None

    def encrypt_text(self, field: str, value: str, *row: object) -> bytes:
        return self.encrypt(field, value.encode("utf-8", "surrogatepass"), *row)

    def decrypt_text(self, field: str, blob: bytes, *row: object) -> str:
        return self.decrypt(field, blob, *row).decode("utf-8", "surrogatepass")


class CipherFactory:
    """Hands out `UserCipher`s, caching unwrapped data keys for a short time in memory."""

    def __init__(self, provider: KeyProvider, *, cache_seconds: float = 300.0) -> None:
        self.provider = provider
        self.cache_seconds = cache_seconds
        self._cache: OrderedDict[tuple[int, str], tuple[float, UserCipher]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = 1024

    def new_user_key(self, user_key_id: str) -> str:
        """Generate a data key for a new user; returns only the wrapped form."""
        _, wrapped = self.provider.generate_data_key(key_context(user_key_id))
        return wrapped

    def for_user(self, user_id: int, user_key_id: str, wrapped_key: str) -> UserCipher:
        cache_key = (user_id, wrapped_key)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(cache_key)
            if hit and hit[0] > now:
                self._cache.move_to_end(cache_key)
                return hit[1]
        data_key = self.provider.unwrap(wrapped_key, key_context(user_key_id))
        cipher = UserCipher(user_id, data_key)
        with self._lock:
            self._cache[cache_key] = (now + self.cache_seconds, cipher)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return cipher

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
