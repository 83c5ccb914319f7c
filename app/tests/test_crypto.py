"""Envelope encryption with the local key file: binding to user, field and row; rotation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mailhelper.crypto import CipherFactory, UserCipher, key_context
from mailhelper.errors import ConfigError, DecryptionError, KeyProviderError
from mailhelper.headers import parse_headers
from mailhelper.keys import LocalKeyFileProvider


def test_ciphertext_is_bound_to_user_field_and_row(tmp_path: Path) -> None:
    provider = LocalKeyFileProvider(tmp_path / "k")
    factory = CipherFactory(provider)
    wrapped_a = factory.new_user_key("a")
    alice = factory.for_user(1, "a", wrapped_a)
    bob = factory.for_user(2, "b", factory.new_user_key("b"))
    blob = alice.encrypt("message.subject", b"secret", 1, 2, 3, 4)
    assert alice.decrypt("message.subject", blob, 1, 2, 3, 4) == b"secret"
    with pytest.raises(DecryptionError):
        alice.decrypt("message.subject", blob, 1, 2, 3, 5)  # copied to another row
    with pytest.raises(DecryptionError):
        alice.decrypt("message.sender", blob, 1, 2, 3, 4)  # another field
    with pytest.raises(DecryptionError):
        bob.decrypt("message.subject", blob, 1, 2, 3, 4)  # another user
    # same data key, other user id in the associated data: still refused
    same_key_other_user = UserCipher(2, provider.unwrap(wrapped_a, key_context("a")))
    with pytest.raises(DecryptionError):
        same_key_other_user.decrypt("message.subject", blob, 1, 2, 3, 4)
    with pytest.raises(DecryptionError):
        alice.decrypt("message.subject", b"\x02" + blob[1:], 1, 2, 3, 4)
    with pytest.raises(DecryptionError):
        alice.decrypt("message.subject", blob[:-1] + bytes([blob[-1] ^ 1]), 1, 2, 3, 4)
    assert (
        alice.decrypt_text(
            "f",
            alice.encrypt_text("f", "Grüße \udcff"),
        )
        == "Grüße \udcff"
    )


def test_local_provider_rotation_rewraps_without_losing_keys(tmp_path: Path) -> None:
    path = tmp_path / "k"
    provider = LocalKeyFileProvider(path)
    assert path.stat().st_mode & 0o777 == 0o600
    ctx = key_context("u1")
    dk, wrapped = provider.generate_data_key(ctx)
    assert wrapped.startswith("local:v1:")
    provider.rotate()
    rewrapped = provider.rewrap(wrapped, ctx)
    assert rewrapped.startswith("local:v2:")
    again = LocalKeyFileProvider(path)  # reloads both versions from the file
    assert again.unwrap(rewrapped, ctx) == dk
    assert again.unwrap(wrapped, ctx) == dk
    with pytest.raises(KeyProviderError):
        again.unwrap(wrapped, key_context("u2"))
    with pytest.raises(KeyProviderError):
        again.unwrap("vault:v1:abc", ctx)
    again.check()
    path.unlink()
    with pytest.raises(KeyProviderError):
        again.check()


@pytest.mark.parametrize("content", ["not json", json.dumps({"keys": {}}), json.dumps({"x": 1})])
def test_corrupt_key_file_is_a_config_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "k"
    path.write_text(content)
    with pytest.raises(ConfigError, match="MAILHELPER_LOCAL_KEY_FILE"):
        LocalKeyFileProvider(path)


def test_cipher_cache_expires_and_clears(tmp_path: Path) -> None:
    factory = CipherFactory(LocalKeyFileProvider(tmp_path / "k"), cache_seconds=0.0)
    wrapped = factory.new_user_key("a")
    first = factory.for_user(1, "a", wrapped)
    assert factory.for_user(1, "a", wrapped) is not first  # expired at once
    factory.cache_seconds = 60
    cached = factory.for_user(1, "a", wrapped)
    assert factory.for_user(1, "a", wrapped) is cached
    factory.max_entries = 1
    factory.for_user(2, "b", factory.new_user_key("b"))
    assert factory.for_user(1, "a", wrapped) is not cached  # evicted
    factory.clear()


def test_header_parser_edge_cases() -> None:
    h = parse_headers(
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\tand more\r\nfrom: A <a@b>\r\n"
        b"From: second <c@d>\r\nMessage-ID:   <id@x>  \r\n\r\nSubject: body"
    )
    assert (h.subject, h.sender, h.message_id) == ("Grüße and more", "A <a@b>", "<id@x>")
    assert parse_headers(b"").subject == ""
    assert parse_headers(b"Subject: \x01ctrl\r\n\r\n").subject == " ctrl"  # no control chars
    long = parse_headers(b"Subject: " + b"x" * 10000 + b"\r\n\r\n")
    assert len(long.subject) == 4096
