"""The digest of the checksums (one place, so copy and verification always agree)."""

from __future__ import annotations

import hashlib

DIGEST = "blake2b-256"


def new_digest() -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=32)
