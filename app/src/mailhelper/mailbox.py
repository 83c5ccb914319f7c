"""Reading stored mail for its owner: paged lists and single decrypted messages."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailhelper.crypto import CipherFactory, UserCipher
from mailhelper.errors import NotFoundError
from mailhelper.models import Folder, MailAccount, Message, User
from mailhelper.users import user_cipher

MAX_PAGE = 200


def _row_key(msg: Message) -> tuple[int, int, int, int]:
    return (msg.account_id, msg.folder_id, msg.uidvalidity, msg.uid)


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    total: int
    page: int
    per_page: int


def summary(cipher: UserCipher, msg: Message, folder_name: str) -> dict[str, Any]:
    key = _row_key(msg)
    return {
        "id": msg.id,
        "account_id": msg.account_id,
        "folder": folder_name,
        "uid": msg.uid,
        "uidvalidity": msg.uidvalidity,
        "flags": msg.flags.split() if msg.flags else [],
        "internal_date": msg.internal_date.isoformat() if msg.internal_date else None,
        "size": msg.size,
        "message_id": msg.message_id,
        "sender": cipher.decrypt_text("message.sender", msg.sender_enc, *key),
        "subject": cipher.decrypt_text("message.subject", msg.subject_enc, *key),
    }


def list_messages(
    session: Session,
    ciphers: CipherFactory,
    user: User,
    account: MailAccount,
    *,
    page: int = 1,
    per_page: int = 50,
    folder: str | None = None,
) -> Page:
    """One page of an account's messages, newest first (account must belong to `user`)."""
    if account.user_id != user.id:
        raise NotFoundError("no such account")
    page = max(1, page)
    per_page = max(1, min(per_page, MAX_PAGE))
    cond = [Message.account_id == account.id]
    if folder is not None:
        cond.append(Folder.name == folder)
    total = session.scalar(select(func.count()).select_from(Message).join(Folder).where(*cond))
    rows = session.execute(
        select(Message, Folder.name)
        .join(Folder, Message.folder_id == Folder.id)
        .where(*cond)
        .order_by(Message.internal_date.desc(), Message.id.desc())
        .offset((page - 1) * per_page)
        .limit(per_page)
    ).all()
    cipher = user_cipher(ciphers, user)
    return Page([summary(cipher, m, name) for m, name in rows], total or 0, page, per_page)


def iter_index(session: Session, account_id: int) -> list[dict[str, Any]]:
    """Plaintext metadata of every message (the CLI listing): no decryption needed."""
    rows = session.execute(
        select(Message.id, Folder.name, Message.uid, Message.size, Message.message_id)
        .join(Folder, Message.folder_id == Folder.id)
        .where(Message.account_id == account_id)
        .order_by(Message.id)
    ).all()
    return [
        {"id": i, "folder": f, "uid": u, "size": s, "message_id": mid} for i, f, u, s, mid in rows
    ]


def get_message(session: Session, user: User, message_id: int) -> tuple[Message, str]:
    """The message and its folder name when `user` owns it; NotFoundError otherwise."""
    row = session.execute(
        select(Message, Folder.name, MailAccount.user_id)
        .join(Folder, Message.folder_id == Folder.id)
        .join(MailAccount, Message.account_id == MailAccount.id)
        .where(Message.id == message_id)
    ).first()
    if row is None or row[2] != user.id:
        raise NotFoundError("no such message")
    return row[0], row[1]


def raw_bytes(ciphers: CipherFactory, user: User, msg: Message) -> bytes:
    return user_cipher(ciphers, user).decrypt("message.raw", msg.raw_enc, *_row_key(msg))


def text_body(raw: bytes, limit: int = 200_000) -> str:
    """Best-effort plain-text rendering for the HTML view (never raises)."""
    try:
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        part = parsed.get_body(preferencelist=("plain", "html"))
        if part is None:
            return ""
        content = part.get_content()
        return content[:limit] if isinstance(content, str) else ""
    except Exception:
        return raw[:limit].decode("utf-8", "replace")


def read_message(
    session: Session, ciphers: CipherFactory, user: User, message_id: int
) -> dict[str, Any]:
    msg, folder_name = get_message(session, user, message_id)
    cipher = user_cipher(ciphers, user)
    data = summary(cipher, msg, folder_name)
    raw = cipher.decrypt("message.raw", msg.raw_enc, *_row_key(msg))
    data["body"] = text_body(raw)
    return data
