"""Exception classes shared by the layers.

The sync errors split into *permanent* (retrying cannot help: wrong password, unknown host,
TLS verification failure) and *transient* (timeouts, dropped connections, a busy lock). The
job layer retries only `TransientSyncError` and records `PermanentSyncError` without retry.
"""

from __future__ import annotations


class MailHelperError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(MailHelperError):
    """Bad or missing configuration; the message names the variable."""


class KeyProviderError(MailHelperError):
    """The key provider (Vault Transit or local key file) failed or refused."""


class VaultUnavailableError(KeyProviderError):
    """Vault is sealed, down or unreachable: it may come back without any change on our side,
    so start-up waits for it (MAILHELPER_VAULT_STARTUP_WAIT). `reason` is short and holds no
    secret: the exception type, e.g. `VaultDown (sealed)` or `ConnectionError`."""

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class DecryptionError(MailHelperError):
    """A ciphertext failed authentication (wrong key, user, field or row)."""


class NotFoundError(MailHelperError):
    """The object does not exist or does not belong to the caller."""


class ValidationError(MailHelperError):
    """Input from a user or operator is invalid."""


class SyncError(MailHelperError):
    """Base class of sync failures."""

    permanent: bool = False


class PermanentSyncError(SyncError):
    """Retrying will not help until somebody changes the account or the server."""

    permanent = True


class AuthenticationError(PermanentSyncError):
    """The IMAP server rejected the credentials."""


class UnknownHostError(PermanentSyncError):
    """The IMAP host name does not resolve."""


class ImapTLSError(PermanentSyncError):
    """TLS could not be established (certificate verification, no STARTTLS support)."""


class AccountDisabledError(PermanentSyncError):
    """Sync is disabled for the account after a permanent failure."""


class TransientSyncError(SyncError):
    """Worth retrying later with backoff."""


class SyncTimeoutError(TransientSyncError):
    """The server did not answer in time."""


class ConnectionDroppedError(TransientSyncError):
    """The connection was refused, reset or closed mid-session."""


class SyncBusyError(TransientSyncError):
    """Another sync of the same account holds the lock for too long."""


class JobRejectedError(MailHelperError):
    """The job backend refused a job (the bounded legacy queue is full); try again later."""
