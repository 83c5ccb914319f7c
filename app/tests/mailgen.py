"""Test mail: well-formed messages of chosen sizes and a set of malformed ones."""

from __future__ import annotations

import datetime as dt
import random
import secrets
from email.utils import format_datetime

_WORDS = [
    "meeting",
    "invoice",
    "report",
    "quarterly",
    "update",
    "project",
    "deadline",
    "coffee",
    "budget",
    "review",
    "server",
    "backup",
    "migration",
    "release",
    "schedule",
    "holiday",
    "sprint",
    "Grüße",
    "straße",
    "Übersicht",
]


def message(
    i: int, size: int = 2000, *, subject: str | None = None, rng: random.Random | None = None
) -> bytes:
    """A plain RFC 822 message of about `size` bytes, CRLF line ends (as IMAP serves)."""
    rng = rng or random.Random(i)
    subject = subject if subject is not None else f"Test {i}: {' '.join(rng.sample(_WORDS, 4))}"
    date = format_datetime(dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=i))
    head = (
        f"From: Sender {i} <sender{i}@example.org>\r\n"
        f"To: someone@example.net\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {date}\r\n"
        f"Message-ID: <{i}.{secrets.token_hex(6)}@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode()
    lines = []
    total = len(head)
    while total < size:
        line = " ".join(rng.choice(_WORDS) for _ in range(12)) + "\r\n"
        lines.append(line)
        total += len(line.encode())
    return head + "".join(lines).encode()


def malformed() -> dict[str, bytes]:
    """Messages a real mailbox contains sooner or later."""
    huge_header = b"X-Huge: " + b"a" * 300_000 + b"\r\n"
    return {
        "no_headers": b"just a body line without any header\r\n",
        "bad_encoded_word": (
            b"From: =?utf-8?b?!!!notbase64?= <x@y>\r\nSubject: =?x-unknown?q?abc?=\r\n\r\nbody\r\n"
        ),
        "eight_bit_garbage": (
            b"From: \xff\xfe\x80 <a@b>\r\nSubject: caf\xe9 \x00\x01 \xc3\x28\r\n\r\n"
            b"\x80\x81\xff body\r\n"
        ),
        "broken_mime": (
            b"From: a@b\r\nSubject: broken mime\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="never-closed"\r\n\r\n'
            b"--never-closed\r\nContent-Type: text/plain\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n"
            b"%%%% not base64 %%%%\r\n"
        ),
        "huge_header": b"From: big@header\r\n"
        + huge_header
        + b"Subject: after huge\r\n\r\nbody\r\n",
        "lf_only": b"From: lf@only\nSubject: lf only\n\nbody\n",
        "empty_subject_folded": b"From: a@b\r\nSubject:\r\n \r\n\tcontinued\r\n\r\nx\r\n",
    }
