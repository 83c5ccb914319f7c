"""Mail accounts: IMAP connection settings and credentials, all encrypted per user."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailhelper.crypto import CipherFactory, UserCipher
from mailhelper.errors import NotFoundError, ValidationError
from mailhelper.models import MailAccount, Message, User
from mailhelper.users import user_cipher

TLS_MODES = ("implicit", "starttls", "none")
_FIELDS = ("host", "port", "tls_mode", "username", "password")


@dataclass(frozen=True)
class ImapSettings:
    """Decrypted connection settings of one account (the password never appears in repr)."""

    host: str
    port: int
    tls_mode: str
    username: str
    password: str = field(repr=False)


def validate_settings(host: str, port: int | str, tls_mode: str, username: str) -> int:
    if not host or len(host) > 255 or any(c.isspace() for c in host):
        raise ValidationError("host must be a host name or address")
    try:
        port_i = int(port)
    except (TypeError, ValueError):
        raise ValidationError("port must be a number") from None
    if not 0 < port_i < 65536:
        raise ValidationError("port must be between 1 and 65535")
    if tls_mode not in TLS_MODES:
        raise ValidationError(f"tls must be one of {', '.join(TLS_MODES)}")
    if not username:
        raise ValidationError("username is required")
    return port_i


def _encrypt_into(cipher: UserCipher, account: MailAccount, settings: ImapSettings) -> None:
    for name in _FIELDS:
        value = str(getattr(settings, name))
        setattr(account, f"{name}_enc", cipher.encrypt_text(f"account.{name}", value, account.id))


def add_account(
    session: Session,
    ciphers: CipherFactory,
    user: User,
    *,
    host: str,
    port: int | str,
    tls_mode: str,
    username: str,
    password: str,
) -> MailAccount:
    """Store a new account for `user`; commits and returns it."""
    port_i = validate_settings(host, port, tls_mode, username)
    if not password:
        raise ValidationError("the IMAP password is required")
    cipher = user_cipher(ciphers, user)
    account = MailAccount(user_id=user.id)
    session.add(account)
    session.flush()  # the row id is part of the associated data
    _encrypt_into(cipher, account, ImapSettings(host, port_i, tls_mode, username, password))
    session.commit()
    return account


def update_account(
    session: Session, ciphers: CipherFactory, user: User, account: MailAccount, **changes: Any
) -> MailAccount:
    """Change connection settings; re-enables sync after a permanent failure. Commits."""
    current = decrypt_settings(user_cipher(ciphers, user), account)
    values = {name: getattr(current, name) for name in _FIELDS}
    values.update({k: v for k, v in changes.items() if k in _FIELDS and v not in (None, "")})
    values["port"] = validate_settings(
        values["host"], values["port"], values["tls_mode"], values["username"]
    )
    _encrypt_into(user_cipher(ciphers, user), account, ImapSettings(**values))
    account.sync_enabled = True
    account.last_error = None
    account.last_error_kind = None
    session.commit()
    return account


def decrypt_settings(cipher: UserCipher, account: MailAccount) -> ImapSettings:
    values = {
        name: cipher.decrypt_text(f"account.{name}", getattr(account, f"{name}_enc"), account.id)
        for name in _FIELDS
    }
    return ImapSettings(
        host=values["host"],
        port=int(values["port"]),
        tls_mode=values["tls_mode"],
        username=values["username"],
        password=values["password"],
    )


def get_account(session: Session, user: User, account_id: int) -> MailAccount:
    """The account when it belongs to `user`; NotFoundError otherwise (no existence leak)."""
    account = session.get(MailAccount, account_id)
    if account is None or account.user_id != user.id:
        raise NotFoundError("no such account")
    return account


def list_accounts(session: Session, user: User) -> list[MailAccount]:
    return list(
        session.scalars(
            select(MailAccount).where(MailAccount.user_id == user.id).order_by(MailAccount.id)
        )
    )


def describe_account(
    session: Session, ciphers: CipherFactory, user: User, account: MailAccount
) -> dict[str, Any]:
    """JSON-ready view of an account for its owner (never the password)."""
    settings = decrypt_settings(user_cipher(ciphers, user), account)
    count = session.scalar(
        select(func.count()).select_from(Message).where(Message.account_id == account.id)
    )
    return {
        "id": account.id,
        "host": settings.host,
        "port": settings.port,
        "tls": settings.tls_mode,
        "username": settings.username,
        "sync_enabled": account.sync_enabled,
        "last_sync_at": account.last_sync_at.isoformat() if account.last_sync_at else None,
        "last_error": account.last_error,
        "last_error_kind": account.last_error_kind,
        "message_count": count or 0,
    }


def delete_account(session: Session, account: MailAccount) -> None:
    session.delete(account)
    session.commit()
