"""The data model. The schema is created only by the Alembic migrations."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    key_id: Mapped[str] = mapped_column(String(64), unique=True)
    wrapped_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    accounts: Mapped[list[MailAccount]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class MailAccount(Base):
    __tablename__ = "mail_accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # host, port, TLS mode, username and password: all encrypted under the user's data key
    host_enc: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    port_enc: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    tls_mode_enc: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    username_enc: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    password_enc: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    sync_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_sync_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_kind: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    user: Mapped[User] = relationship(back_populates="accounts")
    folders: Mapped[list[Folder]] = relationship(
        back_populates="account", cascade="all, delete-orphan", passive_deletes=True
    )


class Folder(Base):
    __tablename__ = "folders"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("mail_accounts.id", ondelete="CASCADE"), index=True
    )
    # the folder name is metadata the IMAP server defines; kept plaintext for the sync
    name: Mapped[str] = mapped_column(String(1000))
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    uidnext: Mapped[int | None] = mapped_column(BigInteger)
    highestmodseq: Mapped[int | None] = mapped_column(BigInteger)
    last_seen_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    last_sync_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    account: Mapped[MailAccount] = relationship(back_populates="folders")


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("account_id", "folder_id", "uidvalidity", "uid", name="uq_messages_uid"),
        Index("ix_messages_account_id_id", "account_id", "id"),
        Index("ix_messages_account_id_internal_date", "account_id", "internal_date", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("mail_accounts.id", ondelete="CASCADE"))
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    flags: Mapped[str] = mapped_column(Text, default="")
    internal_date: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    message_id: Mapped[str | None] = mapped_column(String(998))
    sender_enc: Mapped[bytes] = mapped_column(LargeBinary)
    subject_enc: Mapped[bytes] = mapped_column(LargeBinary)
    raw_enc: Mapped[bytes] = mapped_column(LargeBinary)
    fetched_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobRun(Base):
    """One job request: written by the dispatcher before any backend sees it.

    backend: legacy | celery | fallback (legacy queue used because the broker was down).
    status: pending (recorded, not yet handed over) -> queued -> running [-> retrying ->
    running ...] -> success | failed; `expired` when a scheduled job was not started in time.
    """

    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    backend: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    account_id: Mapped[int | None] = mapped_column(
        ForeignKey("mail_accounts.id", ondelete="SET NULL")
    )
    enqueued_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    force: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # the process whose in-process legacy queue holds the job (legacy/fallback backends):
    # "hostname|boot id|pid|process start ticks"; the reconciler re-dispatches the jobs of
    # a process that no longer exists (mailhelper.job_owner)
    owner: Mapped[str | None] = mapped_column(String(255))


class PhaseTransition(Base):
    """One step of the legacy-queue → Celery migration (phase 0 → 1 → 2 → 3, or back),
    recorded by the phase playbooks: when, who, from where, and whether a gate was forced."""

    __tablename__ = "phase_transitions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    from_phase: Mapped[int | None] = mapped_column(Integer)
    to_phase: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(200), default="")
    forced: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    reason: Mapped[str | None] = mapped_column(Text)
