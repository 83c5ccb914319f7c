"""Header-only parsing of the few fields the sync stores (From, Subject, Message-ID).

Never raises: malformed, 8-bit or truncated mail yields best-effort values. Only the header
block is scanned (bounded), the body is never parsed.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.header import decode_header, make_header

MAX_HEADER_SCAN = 256 * 1024
MAX_VALUE = 4096
_WANTED = {b"from": "sender", b"subject": "subject", b"message-id": "message_id"}
_END_RE = re.compile(rb"\r?\n\r?\n")
_LINE_RE = re.compile(rb"\r?\n")
_CONTROL_TO_SPACE = {c: " " for c in range(32) if c != 9}


@dataclass(frozen=True)
class Headers:
    sender: str
    subject: str
    message_id: str | None


def _to_text(raw: bytes) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")


def decode_value(raw: bytes) -> str:
    """Unfolded header bytes -> text, RFC 2047 encoded words decoded when well formed."""
    text = _to_text(raw).strip()
    if "=?" in text:
        with contextlib.suppress(ValueError, LookupError, UnicodeError, HeaderParseError):
            text = str(make_header(decode_header(text)))
    return text.translate(_CONTROL_TO_SPACE)[:MAX_VALUE]


def parse_headers(raw: bytes) -> Headers:
    head = raw[:MAX_HEADER_SCAN]
    end = _END_RE.search(head)
    if end is not None:
        head = head[: end.start()]
    found: dict[str, bytes] = {}
    current: str | None = None
    for line in _LINE_RE.split(head):
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if current is not None and len(found[current]) < MAX_VALUE * 4:
                found[current] += b" " + line.strip()
            continue
        current = None
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        key = _WANTED.get(name.strip().lower())
        if key is not None and key not in found:
            found[key] = value.strip()
            current = key
    message_id = None
    if "message_id" in found:
        message_id = _to_text(found["message_id"]).strip()[:998] or None
    return Headers(
        sender=decode_value(found.get("sender", b"")),
        subject=decode_value(found.get("subject", b"")),
        message_id=message_id,
    )
