"""The target URL: libpq and SQLAlchemy forms, and a redactor that keeps its password out of
every message, log line and report.

The password may be in the URL (an operator's one-off command), in `PGPASSWORD`, in a
libpq passfile or behind a libpq service (`postgresql:///?service=NAME`): libpq resolves
the last three itself because the URL it gets carries no password then.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from urllib.parse import SplitResult, parse_qsl, quote, quote_plus, unquote, urlsplit

from mailhelper.sqlite_migration.errors import MigrationError

MASK = "***"
_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


@dataclass(frozen=True)
class TargetURL:
    """A PostgreSQL URL as given, with the forms the tools need and a masked display form."""

    raw: str = field(repr=False)
    libpq: str = field(repr=False)
    sqlalchemy: str = field(repr=False)
    display: str
    secrets: tuple[str, ...] = field(repr=False, default=())


def parse_target(url: str) -> TargetURL:
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise MigrationError(
            "--target must be a postgresql:// URL (password optional: PGPASSWORD, a libpq "
            "passfile or service work too)"
        )
    found: list[str] = []
    if parts.password:  # urlsplit leaves it percent-encoded; libpq decodes it
        found.extend((parts.password, unquote(parts.password)))
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "password" and value:
            found.append(value)
    rest = url.split(":", 1)[1]  # "//user@host/db?..." (urlunsplit would drop an empty //)
    libpq = "postgresql:" + rest
    display = _masked(parts)
    secrets: set[str] = set()
    for secret in found:
        secrets.update({secret, quote(secret, safe=""), quote_plus(secret)})
    return TargetURL(
        raw=url,
        libpq=libpq,
        sqlalchemy="postgresql+psycopg:" + rest,
        display=display,
        secrets=tuple(sorted(secrets, key=len, reverse=True)),
    )


def _masked(parts: SplitResult) -> str:
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{MASK}@{hostport}"
    query = re.sub(r"(^|&)password=[^&]*", rf"\1password={MASK}", parts.query)
    text = f"{parts.scheme}://{netloc}{parts.path}"  # urlunsplit drops an empty netloc's //
    text += f"?{query}" if query else ""
    return text + (f"#{parts.fragment}" if parts.fragment else "")


class Redactor:
    """Replaces every form of the target password in text (messages, errors, logs)."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        self.secrets = tuple(s for s in secrets if s)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text


class RedactingFilter(logging.Filter):
    """A logging filter that renders each record once and redacts the result."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True
