"""IMAP connections (implicit TLS, STARTTLS, plain) and error classification."""

from __future__ import annotations

import contextlib
import imaplib
import re
import socket
import ssl
from collections.abc import Iterator
from typing import Any

from imapclient import IMAPClient
from imapclient.datetime_util import parse_to_datetime
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.imapclient import SocketTimeout, seq_to_parenstr_upper
from imapclient.response_parser import parse_fetch_response

from mailhelper.accounts import ImapSettings
from mailhelper.errors import (
    AuthenticationError,
    ConnectionDroppedError,
    ImapTLSError,
    SyncError,
    SyncTimeoutError,
    TransientSyncError,
    UnknownHostError,
)


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Certificate and host name verification on; an extra CA file when configured."""
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


@contextlib.contextmanager
def classified(host: str) -> Iterator[None]:
    """Translate socket, TLS and IMAP errors into the sync error classes."""
    try:
        yield
    except SyncError:
        raise
    except LoginError as exc:
        raise AuthenticationError(f"the IMAP server {host} rejected the login") from exc
    except socket.gaierror as exc:
        raise UnknownHostError(f"the IMAP host {host!r} does not resolve") from exc
    except ssl.SSLCertVerificationError as exc:
        raise ImapTLSError(f"TLS certificate of {host} not trusted: {exc.verify_message}") from exc
    except TimeoutError as exc:
        raise SyncTimeoutError(f"the IMAP server {host} did not answer in time") from exc
    except ssl.SSLError as exc:
        raise ImapTLSError(f"TLS with {host} failed: {exc.reason or exc}") from exc
    except (ConnectionError, EOFError, imaplib.IMAP4.abort, BrokenPipeError) as exc:
        raise ConnectionDroppedError(
            f"the connection to {host} failed or dropped: {type(exc).__name__}"
        ) from exc
    except OSError as exc:
        raise ConnectionDroppedError(f"network error with {host}: {exc.strerror or exc}") from exc
    except IMAPClientError as exc:
        raise TransientSyncError(f"IMAP error from {host}: {exc}") from exc


def connect(settings: ImapSettings, *, ca_file: str | None, timeout: float) -> IMAPClient:
    """A logged-in IMAPClient. Raises the classified sync errors."""
    ctx = tls_context(ca_file)
    sock_timeout = SocketTimeout(connect=min(timeout, 15.0), read=timeout)
    with classified(settings.host):
        client = IMAPClient(
            settings.host,
            port=settings.port,
            ssl=settings.tls_mode == "implicit",
            ssl_context=ctx,
            timeout=sock_timeout,
            use_uid=True,
        )
        # IMAPClient sets imaplib's debug level to 5 and routes it to a logger: imaplib
        # then formats the repr of every response, whole message bodies included, even
        # with the logger off. That was about half the client CPU of a sync, and with
        # DEBUG logging on it would write mail content and credentials to the log.
        client._imap.debug = 0
        try:
            if settings.tls_mode == "starttls":
                if not client.has_capability("STARTTLS"):
                    raise ImapTLSError(f"the IMAP server {settings.host} does not offer STARTTLS")
                client.starttls(ctx)
            client.login(settings.username, settings.password)
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
    return client


def close(client: IMAPClient) -> None:
    with contextlib.suppress(Exception):
        client.logout()
    with contextlib.suppress(Exception):
        client.shutdown()


def uid_fetch(
    client: IMAPClient,
    uid_set: str,
    items: list[bytes],
    modifiers: list[str] | None = None,
) -> dict[int, dict[bytes, Any]]:
    """UID FETCH with an IMAP sequence set such as "1:300,305" or "42:*".

    `IMAPClient.fetch` drops every response whose UID is not literally listed in its
    argument, so ranges and "*" would return nothing; this sends the same command and keeps
    all answers (callers filter by UID themselves).
    """
    args = [
        "UID",
        "FETCH",
        uid_set,
        seq_to_parenstr_upper(items),
        seq_to_parenstr_upper(modifiers) if modifiers else None,
    ]
    imap = client._imap
    tag = imap._command(*args)
    typ, data = imap._command_complete("FETCH", tag)
    client._checkok("fetch", typ, data)
    typ, data = imap._untagged_response(typ, data, "FETCH")
    fast = parse_body_fetch(data) if b"BODY.PEEK[]" in items else parse_plain_fetch(data)
    if fast is not None:
        return fast
    return parse_fetch_response(data, client.normalise_times, True)


_BODY_LITERAL = re.compile(rb"BODY\[\] \{(\d+)\}$")
_UID = re.compile(rb"[( ]UID (\d+)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")
_DATE = re.compile(rb'INTERNALDATE "([^"]+)"')
_MODSEQ = re.compile(rb"MODSEQ \((\d+)\)")


def parse_plain_fetch(data: list[Any]) -> dict[int, dict[bytes, Any]] | None:
    """Fast parser for literal-free answers (UID with RFC822.SIZE, FLAGS, MODSEQ), such as
    the size listing before a fetch and the flag refresh; None means "use the general
    parser"."""
    out: dict[int, dict[bytes, Any]] = {}
    for item in data:
        if not isinstance(item, bytes) or b"{" in item or b'"' in item:
            return None
        uid = _UID.search(item)
        if uid is None:
            return None
        entry: dict[bytes, Any] = {}
        size = _SIZE.search(item)
        if size is not None:
            entry[b"RFC822.SIZE"] = int(size.group(1))
        flags = _FLAGS.search(item)
        if flags is not None:
            entry[b"FLAGS"] = tuple(flags.group(1).split())
        modseq = _MODSEQ.search(item)
        if modseq is not None:
            entry[b"MODSEQ"] = (int(modseq.group(1)),)
        out[int(uid.group(1))] = entry
    return out


def parse_body_fetch(data: list[Any]) -> dict[int, dict[bytes, Any]] | None:
    """Fast parser for responses to FETCH (BODY.PEEK[] FLAGS INTERNALDATE RFC822.SIZE).

    IMAPClient's general parser tokenizes every response in Python and was the largest
    client-side cost of a cold sync. These responses have a fixed shape: one literal (the
    message) per FETCH line. Anything else returns None and the caller falls back to the
    general parser, so unusual servers still work.
    """
    out: dict[int, dict[bytes, Any]] = {}
    i, n = 0, len(data)
    while i < n:
        item = data[i]
        if not isinstance(item, tuple) or len(item) != 2:
            return None
        head, body = item
        tail = data[i + 1] if i + 1 < n and isinstance(data[i + 1], bytes) else b""
        i += 2 if tail else 1
        match = _BODY_LITERAL.search(head)
        if match is None or int(match.group(1)) != len(body) or b"{" in tail:
            return None
        meta = head[: match.start()] + b" " + tail
        uid = _UID.search(meta)
        if uid is None:
            return None
        entry: dict[bytes, Any] = {b"BODY[]": body}
        size = _SIZE.search(meta)
        if size is not None:
            entry[b"RFC822.SIZE"] = int(size.group(1))
        flags = _FLAGS.search(meta)
        if flags is not None:
            entry[b"FLAGS"] = tuple(flags.group(1).split())
        date = _DATE.search(meta)
        if date is not None:
            try:
                entry[b"INTERNALDATE"] = parse_to_datetime(date.group(1), normalise=False)
            except ValueError:
                return None
        out[int(uid.group(1))] = entry
    return out
