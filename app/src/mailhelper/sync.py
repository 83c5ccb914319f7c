"""IMAP -> database sync of one account (`MailSyncService.sync_account`).

Per folder: UIDVALIDITY check (a change drops that folder's rows and resyncs it), a STATUS
fast path when nothing changed (UIDNEXT, MESSAGES and CONDSTORE HIGHESTMODSEQ), new mail by
UID delta fetched in batches bounded by count and bytes on a fetcher thread while the
caller's thread parses headers, encrypts and inserts (ON CONFLICT DO NOTHING, one commit per
batch), flags refreshed (CHANGEDSINCE with CONDSTORE, otherwise one FETCH FLAGS of the whole
folder), deletions detected by comparing UID sets.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from sqlalchemy import Engine, bindparam, delete, func, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mailhelper import imap, metrics
from mailhelper.accounts import ImapSettings, decrypt_settings
from mailhelper.config import Settings
from mailhelper.crypto import CipherFactory, UserCipher
from mailhelper.errors import (
    AccountDisabledError,
    NotFoundError,
    PermanentSyncError,
    SyncError,
    TransientSyncError,
)
from mailhelper.headers import parse_headers
from mailhelper.locks import account_lock
from mailhelper.models import Folder, MailAccount, Message, User, utcnow
from mailhelper.users import user_cipher

log = logging.getLogger(__name__)

FETCH_ITEMS = [b"BODY.PEEK[]", b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE"]
_SKIP_FOLDER_FLAGS = {b"\\noselect", b"\\nonexistent"}
_DELETE_CHUNK = 500
_COLUMNS = (
    "account_id",
    "folder_id",
    "uidvalidity",
    "uid",
    "flags",
    "internal_date",
    "size",
    "message_id",
    "sender_enc",
    "subject_enc",
    "raw_enc",
    "fetched_at",
)
_PG_INSERT = (
    "INSERT INTO messages (account_id, folder_id, uidvalidity, uid, flags, internal_date,"
    " size, message_id, sender_enc, subject_enc, raw_enc, fetched_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %b, %b, %b, %s)"
    " ON CONFLICT (account_id, folder_id, uidvalidity, uid) DO NOTHING"
)


@dataclass
class FolderResult:
    name: str
    new: int = 0
    flags_updated: int = 0
    deleted: int = 0
    skipped: int = 0
    resynced: bool = False
    unchanged: bool = False


@dataclass
class SyncResult:
    account_id: int
    folders: list[FolderResult] = field(default_factory=list)
    removed_folders: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def new(self) -> int:
        return sum(f.new for f in self.folders)

    @property
    def flags_updated(self) -> int:
        return sum(f.flags_updated for f in self.folders)

    @property
    def deleted(self) -> int:
        return sum(f.deleted for f in self.folders)

    def to_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "seconds": round(self.seconds, 4),
            "new": self.new,
            "flags_updated": self.flags_updated,
            "deleted": self.deleted,
            "removed_folders": self.removed_folders,
            "folders": [asdict(f) for f in self.folders],
        }


def uid_ranges(uids: Iterable[int]) -> str:
    """Compact IMAP sequence set for sorted UIDs: 1,2,3,7 -> '1:3,7'."""
    parts: list[str] = []
    start = prev = None
    for uid in uids:
        if start is None:
            start = prev = uid
        elif uid == prev + 1:
            prev = uid
        else:
            parts.append(f"{start}:{prev}" if start != prev else str(start))
            start = prev = uid
    if start is not None:
        parts.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(parts)


def _flags_text(flags: Iterable[bytes | str]) -> str:
    """Stored form of a flag list: sorted, space separated, without the per-session
    \\Recent flag (it changes with every session and is no property of the message)."""
    out = sorted(
        text
        for text in (
            f.decode("utf-8", "replace") if isinstance(f, bytes) else str(f) for f in flags
        )
        if text.lower() != "\\recent"
    )
    return " ".join(out)


def batches(sizes: dict[int, int], max_count: int, max_bytes: int) -> Iterator[list[int]]:
    """UIDs in ascending order, grouped by count and by total size."""
    batch: list[int] = []
    total = 0
    for uid in sorted(sizes):
        size = sizes[uid]
        if batch and (len(batch) >= max_count or total + size > max_bytes):
            yield batch
            batch, total = [], 0
        batch.append(uid)
        total += size
    if batch:
        yield batch


class _Done:
    pass


class MailSyncService:
    """Syncs accounts; safe to call concurrently for the same account (serialized by lock)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        ciphers: CipherFactory,
        settings: Settings,
        *,
        connect: Callable[..., IMAPClient] = imap.connect,
    ) -> None:
        self.sessions = sessions
        self.ciphers = ciphers
        self.settings = settings
        self._connect = connect

    @property
    def engine(self) -> Engine:
        bind = self.sessions.kw["bind"]
        return bind

    # -- public -------------------------------------------------------------------------

    def sync_account(self, account_id: int, *, force: bool = False) -> SyncResult:
        """Sync one account. Raises PermanentSyncError or TransientSyncError subclasses."""
        started = time.monotonic()
        outcome = "error"
        try:
            with account_lock(self.engine, account_id, self.settings.sync_lock_timeout):
                result = self._sync_locked(account_id, force=force)
            outcome = "ok"
            result.seconds = time.monotonic() - started
            return result
        except PermanentSyncError:
            outcome = "permanent_error"
            raise
        except TransientSyncError:
            outcome = "transient_error"
            raise
        finally:
            metrics.SYNC_RUNS.labels(outcome=outcome).inc()
            metrics.SYNC_SECONDS.observe(time.monotonic() - started)

    # -- account level ------------------------------------------------------------------

    def _sync_locked(self, account_id: int, *, force: bool) -> SyncResult:
        with self.sessions() as session:
            account = session.get(MailAccount, account_id)
            if account is None:
                raise NotFoundError(f"no account {account_id}")
            if not account.sync_enabled and not force:
                raise AccountDisabledError(
                    f"sync of account {account_id} is disabled after a permanent error "
                    f"({account.last_error}); update the account settings to re-enable it"
                )
            user = session.get(User, account.user_id)
            assert user is not None  # noqa: S101 - foreign key
            cipher = user_cipher(self.ciphers, user)
            imap_settings = decrypt_settings(cipher, account)
            try:
                result = self._sync_with_server(session, account, cipher, imap_settings)
            except SyncError as exc:
                session.rollback()
                self._record_error(session, account_id, exc)
                raise
            account.last_sync_at = utcnow()
            account.last_error = None
            account.last_error_kind = None
            session.commit()
            return result

    def _record_error(self, session: Session, account_id: int, exc: SyncError) -> None:
        account = session.get(MailAccount, account_id)
        if account is None:  # pragma: no cover - deleted while syncing
            return
        account.last_error = str(exc)[:2000]
        account.last_error_kind = "permanent" if exc.permanent else "transient"
        if exc.permanent and not isinstance(exc, AccountDisabledError):
            account.sync_enabled = False  # no retry storm against a wrong password
        session.commit()
        log.warning("sync of account %s failed (%s): %s", account_id, type(exc).__name__, exc)

    def _sync_with_server(
        self, session: Session, account: MailAccount, cipher: UserCipher, settings: ImapSettings
    ) -> SyncResult:
        result = SyncResult(account_id=account.id)
        client = self._connect(
            settings, ca_file=self.settings.imap_ca_file, timeout=self.settings.imap_timeout
        )
        try:
            with imap.classified(settings.host):
                client.normalise_times = False
                condstore = client.has_capability("CONDSTORE")
                if condstore:
                    client.enable("CONDSTORE")
                names = self._server_folders(client)
            result.removed_folders = self._drop_vanished_folders(session, account.id, names)
            for name in names:
                folder = self._folder_row(session, account.id, name)
                with imap.classified(settings.host):
                    folder_result = FolderSync(
                        self, session, client, cipher, account, folder, condstore
                    ).run()
                result.folders.append(folder_result)
        finally:
            imap.close(client)
        return result

    @staticmethod
    def _server_folders(client: IMAPClient) -> list[str]:
        names = []
        for flags, _delim, name in client.list_folders():
            if {f.lower() for f in flags} & _SKIP_FOLDER_FLAGS:
                continue
            names.append(name)
        return names

    @staticmethod
    def _drop_vanished_folders(session: Session, account_id: int, names: list[str]) -> list[str]:
        rows = session.execute(
            select(Folder.id, Folder.name).where(Folder.account_id == account_id)
        ).all()
        gone = [(fid, fname) for fid, fname in rows if fname not in set(names)]
        for fid, _ in gone:
            session.execute(delete(Message).where(Message.folder_id == fid))
            session.execute(delete(Folder).where(Folder.id == fid))
        session.commit()
        return [fname for _, fname in gone]

    @staticmethod
    def _folder_row(session: Session, account_id: int, name: str) -> Folder:
        folder = session.scalar(
            select(Folder).where(Folder.account_id == account_id, Folder.name == name)
        )
        if folder is None:
            folder = Folder(account_id=account_id, name=name, last_seen_uid=0, message_count=0)
            session.add(folder)
            try:
                session.commit()
            except IntegrityError:  # another process created it first (SQLite: no lock)
                session.rollback()
                folder = session.scalars(
                    select(Folder).where(Folder.account_id == account_id, Folder.name == name)
                ).one()
        return folder


class FolderSync:
    """The sync of one folder over an open connection."""

    def __init__(
        self,
        service: MailSyncService,
        session: Session,
        client: IMAPClient,
        cipher: UserCipher,
        account: MailAccount,
        folder: Folder,
        condstore: bool,
    ) -> None:
        self.service = service
        self.session = session
        self.client = client
        self.cipher = cipher
        self.account = account
        self.folder = folder
        self.condstore = condstore
        self.result = FolderResult(name=folder.name)
        self.dialect = session.get_bind().dialect.name
        # SQLite: RETURNING tells which rows were really new; SQLAlchemy batches it into
        # multi-row INSERT ... VALUES statements
        self.insert_stmt = (
            sqlite_insert(Message.__table__)
            .on_conflict_do_nothing(
                index_elements=["account_id", "folder_id", "uidvalidity", "uid"]
            )
            .returning(Message.__table__.c.uid)
        )

    def run(self) -> FolderResult:
        folder = self.folder
        items = [b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES"]
        if self.condstore:
            items.append(b"HIGHESTMODSEQ")
        status = self.client.folder_status(folder.name, items)
        uidvalidity = int(status[b"UIDVALIDITY"])
        if folder.uidvalidity is not None and folder.uidvalidity != uidvalidity:
            self._reset(uidvalidity)
        elif self._unchanged(status):
            self.result.unchanged = True
            return self.result

        selected = self.client.select_folder(folder.name, readonly=True)
        uidvalidity = int(selected[b"UIDVALIDITY"])
        if folder.uidvalidity is not None and folder.uidvalidity != uidvalidity:
            self._reset(uidvalidity)  # changed between STATUS and SELECT
        folder.uidvalidity = uidvalidity
        exists = int(selected.get(b"EXISTS", 0))
        modseq = selected.get(b"HIGHESTMODSEQ")
        if isinstance(modseq, tuple | list):
            modseq = modseq[0]
        uidnext = selected.get(b"UIDNEXT")

        if exists:
            had_messages = bool(folder.last_seen_uid)
            self._fetch_new()
            if had_messages:
                # (a first sync fetched the flags with the messages; changes since SELECT
                # are caught next time through CHANGEDSINCE the HIGHESTMODSEQ of SELECT)
                self._refresh_flags(full=not (self.condstore and folder.highestmodseq))
        self._detect_deletions(exists)

        folder.uidnext = int(uidnext) if uidnext is not None else None
        folder.highestmodseq = int(modseq) if modseq is not None else None
        folder.message_count = exists
        folder.last_sync_at = utcnow()
        self.session.commit()
        metrics.SYNC_MESSAGES.inc(self.result.new)
        metrics.SYNC_FLAG_UPDATES.inc(self.result.flags_updated)
        metrics.SYNC_DELETIONS.inc(self.result.deleted)
        return self.result

    def _unchanged(self, status: dict[bytes, Any]) -> bool:
        folder = self.folder
        if folder.uidvalidity is None or not self.condstore or folder.highestmodseq is None:
            return False
        return (
            int(status[b"UIDNEXT"]) == folder.uidnext
            and int(status[b"MESSAGES"]) == folder.message_count
            and int(status[b"HIGHESTMODSEQ"]) == folder.highestmodseq
        )

    def _reset(self, uidvalidity: int) -> None:
        """UIDVALIDITY changed: the old UIDs mean nothing now, drop them and start over."""
        log.info(
            "folder %r of account %s: UIDVALIDITY %s -> %s, resyncing",
            self.folder.name,
            self.account.id,
            self.folder.uidvalidity,
            uidvalidity,
        )
        self.session.execute(
            delete(Message).where(
                Message.folder_id == self.folder.id, Message.uidvalidity != uidvalidity
            )
        )
        self.folder.uidvalidity = uidvalidity
        self.folder.last_seen_uid = 0
        self.folder.highestmodseq = None
        self.folder.uidnext = None
        self.folder.message_count = 0
        self.session.commit()
        self.result.resynced = True

    # -- new messages -------------------------------------------------------------------

    def _fetch_new(self) -> None:
        last = self.folder.last_seen_uid or 0
        # "N:*" returns the last message even when N is above it: filter by UID
        sizes_resp = imap.uid_fetch(self.client, f"{last + 1}:*", [b"RFC822.SIZE"])
        sizes = {
            uid: int(data.get(b"RFC822.SIZE", 0)) for uid, data in sizes_resp.items() if uid > last
        }
        if not sizes:
            return
        settings = self.service.settings
        plan = list(batches(sizes, settings.sync_batch_messages, settings.sync_batch_bytes))
        out: queue.Queue[Any] = queue.Queue(maxsize=2)
        stop = threading.Event()
        worker = threading.Thread(
            target=self._fetcher, args=(plan, out, stop), name="imap-fetch", daemon=True
        )
        worker.start()
        try:
            while True:
                item = out.get()
                if isinstance(item, _Done):
                    break
                if isinstance(item, BaseException):
                    raise item
                batch_uids, fetched = item
                self._store_batch(batch_uids, fetched)
        finally:
            stop.set()
            while worker.is_alive():
                try:
                    out.get_nowait()
                except queue.Empty:
                    worker.join(0.05)

    def _fetcher(self, plan: list[list[int]], out: queue.Queue[Any], stop: threading.Event) -> None:
        try:
            for batch_uids in plan:
                if stop.is_set():
                    return
                out.put((batch_uids, self._fetch_batch(batch_uids)))
            out.put(_Done())
        except BaseException as exc:  # handed to the consumer thread, which raises it
            out.put(exc)

    def _fetch_batch(self, uids: list[int]) -> dict[int, dict[bytes, Any]]:
        try:
            return imap.uid_fetch(self.client, uid_ranges(uids), FETCH_ITEMS)
        except IMAPClientError as exc:
            if len(uids) == 1:
                log.warning("message uid %s in %r unreadable: %s", uids[0], self.folder.name, exc)
                return {}
        # a response the client cannot parse: retry one by one so one bad message
        # does not stop the folder
        merged: dict[int, dict[bytes, Any]] = {}
        for uid in uids:
            merged.update(self._fetch_batch([uid]))
        return merged

    def _store_batch(self, uids: list[int], fetched: dict[int, dict[bytes, Any]]) -> None:
        folder = self.folder
        account_id = self.account.id
        uidvalidity = folder.uidvalidity
        now = utcnow()
        rows = []
        enc = self.cipher.encrypt
        for uid in uids:
            data = fetched.get(uid)
            raw = data.get(b"BODY[]") if data else None
            if raw is None:
                self.result.skipped += 1
                continue
            headers = parse_headers(raw)
            row_key = (account_id, folder.id, uidvalidity, uid)
            internal_date = data.get(b"INTERNALDATE")
            rows.append(
                {
                    "account_id": account_id,
                    "folder_id": folder.id,
                    "uidvalidity": uidvalidity,
                    "uid": uid,
                    "flags": _flags_text(data.get(b"FLAGS", ())),
                    "internal_date": internal_date,
                    "size": int(data.get(b"RFC822.SIZE") or len(raw)),
                    "message_id": headers.message_id,
                    "sender_enc": enc("message.sender", headers.sender.encode(), *row_key),
                    "subject_enc": enc("message.subject", headers.subject.encode(), *row_key),
                    "raw_enc": enc("message.raw", bytes(raw), *row_key),
                    "fetched_at": now,
                }
            )
        if rows:
            self.result.new += self._insert(rows)
        # advance the high-water mark in the same transaction as the rows
        folder.last_seen_uid = max(folder.last_seen_uid or 0, uids[-1])
        self.session.commit()

    def _insert(self, rows: list[dict[str, Any]]) -> int:
        """Insert a batch, skipping rows that exist; returns how many were new."""
        if self.dialect != "postgresql":
            return len(self.session.execute(self.insert_stmt, rows).all())
        # PostgreSQL: psycopg executemany in pipeline mode with the encrypted columns in
        # binary format (no hex escaping of ~35 KB per message), one round trip per batch
        dbapi = self.session.connection().connection.dbapi_connection
        with dbapi.cursor() as cur:  # type: ignore[union-attr]
            # a crash may lose the last batches of this transaction only together with
            # their last_seen_uid (same transaction): the next sync fetches them again
            cur.execute("SET LOCAL synchronous_commit TO OFF")
            cur.executemany(_PG_INSERT, [tuple(r[c] for c in _COLUMNS) for r in rows])
            return max(cur.rowcount, 0)

    # -- flags and deletions ------------------------------------------------------------

    def _refresh_flags(self, *, full: bool) -> None:
        folder = self.folder
        if full:
            server = imap.uid_fetch(self.client, "1:*", [b"FLAGS"])
        else:
            server = imap.uid_fetch(
                self.client, "1:*", [b"FLAGS"], [f"CHANGEDSINCE {folder.highestmodseq}"]
            )
        if not server:
            return
        server_flags = {uid: _flags_text(d.get(b"FLAGS", ())) for uid, d in server.items()}
        q = select(Message.uid, Message.flags).where(
            Message.folder_id == folder.id, Message.uidvalidity == folder.uidvalidity
        )
        if not full and len(server_flags) < 1000:
            q = q.where(Message.uid.in_(list(server_flags)))
        changes = [
            {"b_uid": uid, "b_flags": server_flags[uid]}
            for uid, flags in self.session.execute(q)
            if uid in server_flags and server_flags[uid] != flags
        ]
        if changes:
            stmt = (
                update(Message.__table__)
                .where(
                    Message.__table__.c.folder_id == folder.id,
                    Message.__table__.c.uidvalidity == folder.uidvalidity,
                    Message.__table__.c.uid == bindparam("b_uid"),
                )
                .values(flags=bindparam("b_flags"))
            )
            self.session.execute(stmt, changes)
            self.session.commit()
        self.result.flags_updated += len(changes)

    def _detect_deletions(self, exists: int) -> None:
        folder = self.folder
        stored = self.session.scalar(
            select(func.count())
            .select_from(Message)
            .where(Message.folder_id == folder.id, Message.uidvalidity == folder.uidvalidity)
        )
        if not stored or (stored == exists and exists != 0):
            return
        on_server = set(self.client.search("ALL")) if exists else set()
        local = self.session.scalars(
            select(Message.uid).where(
                Message.folder_id == folder.id, Message.uidvalidity == folder.uidvalidity
            )
        ).all()
        gone = [uid for uid in local if uid not in on_server]
        for start in range(0, len(gone), _DELETE_CHUNK):
            chunk = gone[start : start + _DELETE_CHUNK]
            self.session.execute(
                delete(Message).where(
                    Message.folder_id == folder.id,
                    Message.uidvalidity == folder.uidvalidity,
                    Message.uid.in_(chunk),
                )
            )
        self.session.commit()
        self.result.deleted += len(gone)
