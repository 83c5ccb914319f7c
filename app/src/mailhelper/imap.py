"""IMAP connections (implicit TLS, STARTTLS, plain) and error classification."""

from __future__ import annotations

import contextlib
import imaplib
import socket
import ssl
from collections.abc import Iterator
from typing import Any

from imapclient import IMAPClient
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
    return parse_fetch_response(data, client.normalise_times, True)
