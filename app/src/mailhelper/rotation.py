"""Key rotation: rotate the master key, then rewrap every stored data key.

Content is never decrypted; only the wrapped data keys change. Each user's new wrapped key
is committed on its own, so an interrupted run can simply be repeated.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailhelper.crypto import CipherFactory, key_context
from mailhelper.keys import KeyProvider
from mailhelper.models import User


@dataclass
class RotationResult:
    rewrapped: int
    users: int


def rotate_keys(session: Session, keys: KeyProvider, ciphers: CipherFactory) -> RotationResult:
    keys.rotate()
    ids = session.scalars(select(User.id).order_by(User.id)).all()
    done = 0
    for user_id in ids:
        user = session.get(User, user_id)
        if user is None:  # pragma: no cover - deleted meanwhile
            continue
        new = keys.rewrap(user.wrapped_key, key_context(user.key_id))
        if new != user.wrapped_key:
            user.wrapped_key = new
            done += 1
        session.commit()
    ciphers.clear()
    return RotationResult(rewrapped=done, users=len(ids))
