"""Users: registration, password check (scrypt KDF), API tokens, per-user ciphers."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import secrets
import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from mailhelper.crypto import CipherFactory, UserCipher
from mailhelper.errors import NotFoundError, ValidationError
from mailhelper.models import ApiToken, User, utcnow

EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
MIN_PASSWORD = 10
FREE_FAILURES = 5
MAX_LOCK_SECONDS = 15 * 60
# scrypt, N=2^15, r=8, p=1 (about 32 MiB and tens of milliseconds per hash)
PASSWORD_METHOD = "scrypt:32768:8:1"  # noqa: S105 - a KDF name, not a password


@functools.cache
def _dummy_hash() -> str:
    """A hash of a discarded random password, checked when the e-mail address is unknown.

    Made on first use, not at import: scrypt costs about 0.15 s of every process
    start otherwise (CLI, web, workers, Flower), and most never check a password.
    """
    return generate_password_hash(secrets.token_urlsafe(16), method=PASSWORD_METHOD)


def prepare_password_checks() -> None:
    """Make the unknown-address hash now (the web app at start), so that the first login with
    an unknown address takes as long as every later one."""
    _dummy_hash()


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    if not EMAIL_RE.match(email):
        raise ValidationError("a valid e-mail address is required")
    return email


def create_user(session: Session, ciphers: CipherFactory, email: str, password: str) -> User:
    """Create a user with a fresh wrapped data key. Commits."""
    email = normalize_email(email)
    if len(password) < MIN_PASSWORD:
        raise ValidationError(f"the password needs at least {MIN_PASSWORD} characters")
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise ValidationError("a user with this e-mail address exists")
    key_id = uuid.uuid4().hex
    user = User(
        email=email,
        password_hash=generate_password_hash(password, method=PASSWORD_METHOD),
        key_id=key_id,
        wrapped_key=ciphers.new_user_key(key_id),
    )
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ValidationError("a user with this e-mail address exists") from None
    return user


def _aware(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; they are stored in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def lock_seconds(failures: int) -> float:
    """No lock for the first failures, then 30 s doubling per failure up to 15 minutes."""
    if failures < FREE_FAILURES:
        return 0.0
    return float(min(MAX_LOCK_SECONDS, 30 * 2 ** (failures - FREE_FAILURES)))


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The user when the password matches; constant work whether or not the user exists.

    Repeated failures lock the user's password login for a growing time; while locked the
    right password is refused too (the answer looks the same, so it reveals nothing).
    """
    try:
        email = normalize_email(email)
    except ValidationError:
        email = ""
    user = session.scalar(select(User).where(User.email == email)) if email else None
    if user is None:
        check_password_hash(_dummy_hash(), password)
        return None
    ok = check_password_hash(user.password_hash, password)
    now = utcnow()
    if user.locked_until is not None and _aware(user.locked_until) > now:
        return None
    if ok:
        if user.failed_logins:
            user.failed_logins, user.locked_until = 0, None
            session.commit()
        return user
    user.failed_logins = (user.failed_logins or 0) + 1
    seconds = lock_seconds(user.failed_logins)
    user.locked_until = now + dt.timedelta(seconds=seconds) if seconds else None
    session.commit()
    return None


def get_user_by_email(session: Session, email: str) -> User:
    user = session.scalar(select(User).where(User.email == normalize_email(email)))
    if user is None:
        raise NotFoundError(f"no user {email}")
    return user


def user_cipher(ciphers: CipherFactory, user: User) -> UserCipher:
    return ciphers.for_user(user.id, user.key_id, user.wrapped_key)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(session: Session, user: User, name: str = "") -> str:
    """A new API token; only its sha256 is stored. Commits."""
    token = "mh_" + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=_token_hash(token), name=name[:100]))
    session.commit()
    return token


def user_for_token(session: Session, token: str) -> User | None:
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == _token_hash(token)))
    if row is None:
        return None
    row.last_used_at = utcnow()
    session.commit()
    return session.get(User, row.user_id)


def revoke_token(session: Session, user: User, token: str) -> bool:
    row = session.scalar(
        select(ApiToken).where(
            ApiToken.token_hash == _token_hash(token), ApiToken.user_id == user.id
        )
    )
    if row is None:
        return False
    session.delete(row)
    session.commit()
    return True
