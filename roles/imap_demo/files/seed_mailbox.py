#!/usr/bin/env python3
"""Fill a new Maildir with generated demo messages (INBOX and Archive), then mark it seeded.

Usage: seed_mailbox.py MAILDIR COUNT OWNER

The messages vary on purpose: plain and multipart, non-ASCII headers, an attachment, read
and flagged ones, so a mail client (and the sync under test) sees realistic mail.
"""

import os
import random
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

SUBJECTS = [
    "Quarterly report",
    "Grüße aus München",
    "Meeting notes: migration to Celery",
    "Rechnung Nr. 4711",
    "Ünïcödé test ✓",
    "Re: backup schedule",
]
SENDERS = ["alice@example.org", "Bob Müller <bob@example.net>", "noreply@example.com"]


def message(index: int, rng: random.Random, user: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = rng.choice(SENDERS)
    msg["To"] = f"{user}@demo.invalid"
    msg["Subject"] = f"{rng.choice(SUBJECTS)} #{index}"
    msg["Date"] = format_datetime(datetime.now(UTC) - timedelta(hours=index))
    msg["Message-ID"] = make_msgid(domain="demo.invalid")
    body = "\n".join(f"Line {n} of demo message {index}." for n in range(rng.randint(3, 40)))
    msg.set_content(body)
    if index % 5 == 0:
        msg.add_attachment(
            rng.randbytes(2048),
            maintype="application",
            subtype="octet-stream",
            filename=f"data-{index}.bin",
        )
    return msg.as_bytes()


def write_folder(folder: Path, count: int, rng: random.Random, user: str, start: int) -> None:
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        index = start + i
        flags = "S" if index % 3 else ""
        flags += "F" if index % 7 == 0 else ""
        name = f"{int(time.time())}.{index}_{os.getpid()}.demo:2,{flags}"
        (folder / "cur" / name).write_bytes(message(index, rng, user))


def main() -> int:
    maildir, count, owner = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    marker = maildir / ".imap-demo-seeded"
    if marker.exists():
        return 0
    rng = random.Random(str(maildir))  # noqa: S311 -- demo content, not security
    user = maildir.parent.name
    inbox = max(count - count // 5, 1)
    write_folder(maildir, inbox, rng, user, 1)
    write_folder(maildir / ".Archive", count - inbox, rng, user, inbox + 1)
    marker.write_text("seeded\n")
    for root, dirs, files in os.walk(maildir.parent):
        for name in [*dirs, *files]:
            shutil.chown(os.path.join(root, name), owner, owner)
    shutil.chown(maildir.parent, owner, owner)
    return 0


if __name__ == "__main__":
    sys.exit(main())
