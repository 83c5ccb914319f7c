"""MailSyncService against a real Dovecot: TLS modes, delta, flags, deletions, UIDVALIDITY,
idempotence and races, raw round trip, malformed mail."""

from __future__ import annotations

import hashlib
import threading

import pytest
from mailhelper.crypto import CipherFactory
from mailhelper.mailbox import raw_bytes
from mailhelper.models import Folder, Message, User
from mailhelper.runtime import Runtime
from mailhelper.sync import batches, uid_ranges
from sqlalchemy import func, select

from tests.conftest import Mailbox, make_mailbox
from tests.mailgen import malformed, message
from tests.servers import DovecotServer


def stored(rt: Runtime, account_id: int) -> dict[tuple[str, int], Message]:
    with rt.sessions() as s:
        rows = s.execute(
            select(Message, Folder.name)
            .join(Folder, Message.folder_id == Folder.id)
            .where(Message.account_id == account_id)
        ).all()
        return {(name, m.uid): m for m, name in rows}


def decrypt_raw(rt: Runtime, user_id: int, msg: Message) -> bytes:
    with rt.sessions() as s:
        user = s.get(User, user_id)
        return raw_bytes(rt.ciphers, user, msg)


@pytest.mark.parametrize("tls", ["implicit", "starttls", "none"])
def test_sync_over_each_tls_mode_round_trips_raw_bytes(
    runtime: Runtime, dovecot: DovecotServer, tls: str
) -> None:
    box = make_mailbox(runtime, dovecot, tls=tls)
    raws = [message(i, 500 + i * 3000) for i in range(5)]
    for raw in raws:
        box.append(raw)
    result = runtime.sync.sync_account(box.account_id)
    assert result.new == 5
    rows = stored(runtime, box.account_id)
    assert len(rows) == 5
    got = sorted(
        hashlib.sha256(decrypt_raw(runtime, box.user_id, m)).hexdigest() for m in rows.values()
    )
    want = sorted(hashlib.sha256(r).hexdigest() for r in raws)
    assert got == want
    inbox = [m for (f, _), m in rows.items() if f == "INBOX"]
    assert all(m.message_id and m.message_id.startswith("<") for m in inbox)
    assert all(m.size == len(decrypt_raw(runtime, box.user_id, m)) for m in inbox)


def test_delta_fetches_only_new_uids_and_is_idempotent(
    any_runtime: Runtime, dovecot: DovecotServer
) -> None:
    rt = any_runtime
    box = make_mailbox(rt, dovecot)
    for i in range(3):
        box.append(message(i))
    assert rt.sync.sync_account(box.account_id).new == 3
    second = rt.sync.sync_account(box.account_id)
    assert second.new == 0
    assert all(f.unchanged for f in second.folders)
    uid = box.append(message(10))
    from mailhelper import imap

    requested: list[str] = []
    real_fetch = imap.uid_fetch

    def recording(client, uid_set, items, modifiers=None):
        if b"BODY.PEEK[]" in items:
            requested.append(uid_set)
        return real_fetch(client, uid_set, items, modifiers)

    imap.uid_fetch = recording
    try:
        third = rt.sync.sync_account(box.account_id)
    finally:
        imap.uid_fetch = real_fetch
    assert requested == [str(uid)]  # only the message above the last seen UID
    assert third.new == 1
    rows = stored(rt, box.account_id)
    assert set(rows) == {("INBOX", 1), ("INBOX", 2), ("INBOX", 3), ("INBOX", uid)}
    with rt.sessions() as s:
        folder = s.scalar(select(Folder).where(Folder.account_id == box.account_id))
        assert folder.last_seen_uid == uid


def test_flags_are_refreshed_and_deletions_detected(
    any_runtime: Runtime, dovecot: DovecotServer
) -> None:
    rt = any_runtime
    box = make_mailbox(rt, dovecot)
    uids = [box.append(message(i), flags=(b"\\Seen",) if i == 0 else ()) for i in range(4)]
    rt.sync.sync_account(box.account_id)
    assert stored(rt, box.account_id)[("INBOX", uids[0])].flags == "\\Seen"
    with box.imap() as c:
        c.select_folder("INBOX")
        c.add_flags([uids[1]], [b"\\Flagged", b"$Label1"])
        c.remove_flags([uids[0]], [b"\\Seen"])
        c.delete_messages([uids[2]])
        c.expunge()
    result = rt.sync.sync_account(box.account_id)
    assert result.flags_updated == 2
    assert result.deleted == 1
    rows = stored(rt, box.account_id)
    assert rows[("INBOX", uids[0])].flags == ""
    assert set(rows[("INBOX", uids[1])].flags.split()) == {"\\Flagged", "$Label1"}
    assert ("INBOX", uids[2]) not in rows
    # delete one and add one: the count stays equal, the deletion must still be seen
    with box.imap() as c:
        c.select_folder("INBOX")
        c.delete_messages([uids[3]])
        c.expunge()
    new_uid = box.append(message(99))
    result = rt.sync.sync_account(box.account_id)
    assert (result.new, result.deleted) == (1, 1)
    assert set(stored(rt, box.account_id)) == {
        ("INBOX", uids[0]),
        ("INBOX", uids[1]),
        ("INBOX", new_uid),
    }


def test_flags_without_condstore_use_one_full_fetch(
    runtime: Runtime, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a server without CONDSTORE: Dovecot always has it, so hide the capability
    from imapclient import IMAPClient

    real = IMAPClient.has_capability
    monkeypatch.setattr(
        IMAPClient, "has_capability", lambda self, cap: cap != "CONDSTORE" and real(self, cap)
    )
    uid = mailbox.append(message(1))
    assert runtime.sync.sync_account(mailbox.account_id).new == 1
    with mailbox.imap() as c:
        c.select_folder("INBOX")
        c.add_flags([uid], [b"\\Answered"])
    again = runtime.sync.sync_account(mailbox.account_id)
    assert again.flags_updated == 1
    assert not any(f.unchanged for f in again.folders)
    assert stored(runtime, mailbox.account_id)[("INBOX", uid)].flags == "\\Answered"


def test_uidvalidity_change_resyncs_the_folder_without_mixing(
    any_runtime: Runtime, dovecot: DovecotServer
) -> None:
    rt = any_runtime
    box = make_mailbox(rt, dovecot)
    for i in range(3):
        box.append(message(i), folder="Archive")
    box.append(message(50))
    rt.sync.sync_account(box.account_id)
    with rt.sessions() as s:
        old_validity = s.scalar(
            select(Folder.uidvalidity).where(
                Folder.name == "Archive", Folder.account_id == box.account_id
            )
        )
    with box.imap() as c:  # recreating the folder gives it a new UIDVALIDITY
        c.delete_folder("Archive")
        c.create_folder("Archive")
    raws = [message(100 + i) for i in range(2)]
    for raw in raws:
        box.append(raw, folder="Archive")
    result = rt.sync.sync_account(box.account_id)
    archive = next(f for f in result.folders if f.name == "Archive")
    assert archive.resynced
    assert archive.new == 2
    with rt.sessions() as s:
        rows = s.execute(
            select(Message.uidvalidity, Message.uid)
            .join(Folder)
            .where(Folder.name == "Archive", Message.account_id == box.account_id)
        ).all()
    assert len(rows) == 2
    assert all(v != old_validity for v, _ in rows)
    archived = [m for (f, _), m in stored(rt, box.account_id).items() if f == "Archive"]
    assert sorted(decrypt_raw(rt, box.user_id, m) for m in archived) == sorted(raws)
    assert len([k for k in stored(rt, box.account_id) if k[0] == "INBOX"]) == 1


def test_removed_folder_drops_its_messages(runtime: Runtime, mailbox: Mailbox) -> None:
    mailbox.append(message(1), folder="Old")
    runtime.sync.sync_account(mailbox.account_id)
    with mailbox.imap() as c:
        c.delete_folder("Old")
    result = runtime.sync.sync_account(mailbox.account_id)
    assert result.removed_folders == ["Old"]
    assert not [k for k in stored(runtime, mailbox.account_id) if k[0] == "Old"]


def test_racing_syncs_store_each_message_once(any_runtime: Runtime, dovecot: DovecotServer) -> None:
    rt = any_runtime
    box = make_mailbox(rt, dovecot)
    dovecot.write_maildir(
        box.imap_user, [(message(i, 3000), "S" if i % 2 else "") for i in range(120)]
    )
    errors: list[BaseException] = []
    results = []

    def run() -> None:
        try:
            results.append(rt.sync.sync_account(box.account_id))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert sum(r.new for r in results) == 120
    with rt.sessions() as s:
        count = s.scalar(
            select(func.count()).select_from(Message).where(Message.account_id == box.account_id)
        )
    assert count == 120


def test_concurrent_sync_from_two_services_share_the_database_lock(
    runtime: Runtime, mailbox: Mailbox, settings: object
) -> None:
    """Two service objects (as two worker processes would have) on one PostgreSQL."""
    from mailhelper.runtime import build_runtime

    other = build_runtime(runtime.settings)
    try:
        mailbox.dovecot.write_maildir(
            mailbox.imap_user, [(message(i, 2000), "") for i in range(60)]
        )
        results = []
        threads = [
            threading.Thread(
                target=lambda r=r: results.append(r.sync.sync_account(mailbox.account_id))
            )
            for r in (runtime, other)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert sorted(r.new for r in results) == [0, 60]
    finally:
        other.close()


def test_malformed_mail_is_stored_and_never_fatal(
    any_runtime: Runtime, dovecot: DovecotServer
) -> None:
    rt = any_runtime
    box = make_mailbox(rt, dovecot)
    bad = malformed()
    dovecot.write_maildir(box.imap_user, [(raw, "") for raw in bad.values()] + [(message(1), "")])
    result = rt.sync.sync_account(box.account_id)
    assert result.new == len(bad) + 1
    got = {
        hashlib.sha256(decrypt_raw(rt, box.user_id, m)).hexdigest()
        for m in stored(rt, box.account_id).values()
    }
    served = set()
    with box.imap() as c:
        c.select_folder("INBOX", readonly=True)
        for data in c.fetch(c.search("ALL"), [b"BODY.PEEK[]"]).values():
            served.add(hashlib.sha256(data[b"BODY[]"]).hexdigest())
    assert got == served


def test_large_mailbox_is_fetched_in_bounded_batches(
    runtime: Runtime, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailhelper import imap

    calls: list[str] = []
    real_fetch = imap.uid_fetch

    def counting_fetch(client, uid_set, items, modifiers=None):
        if b"BODY.PEEK[]" in items:
            calls.append(uid_set)
        return real_fetch(client, uid_set, items, modifiers)

    monkeypatch.setattr(imap, "uid_fetch", counting_fetch)
    runtime.sync.settings = runtime.settings.with_overrides(
        sync_batch_messages=40, sync_batch_bytes=10**9
    )
    mailbox.dovecot.write_maildir(mailbox.imap_user, [(message(i, 1500), "") for i in range(130)])
    assert runtime.sync.sync_account(mailbox.account_id).new == 130
    assert len(calls) == 4  # 40 + 40 + 40 + 10, never one per message


def test_uid_ranges_and_batches() -> None:
    assert uid_ranges([1, 2, 3, 7, 9, 10]) == "1:3,7,9:10"
    assert uid_ranges([]) == ""
    sizes = {1: 10, 2: 10, 3: 100, 4: 5, 5: 5}
    assert list(batches(sizes, max_count=2, max_bytes=1000)) == [[1, 2], [3, 4], [5]]
    assert list(batches(sizes, max_count=10, max_bytes=50)) == [[1, 2], [3], [4, 5]]


def test_cipher_cache_unwraps_once(runtime: Runtime, mailbox: Mailbox) -> None:
    calls = []
    provider = runtime.ciphers.provider
    real = provider.unwrap

    def counting(wrapped: str, context: bytes) -> bytes:
        calls.append(1)
        return real(wrapped, context)

    provider.unwrap = counting  # type: ignore[method-assign]
    fresh = CipherFactory(provider)
    runtime.sync.ciphers = fresh
    for i in range(3):
        mailbox.append(message(i))
    runtime.sync.sync_account(mailbox.account_id)
    runtime.sync.sync_account(mailbox.account_id)
    assert len(calls) == 1


def test_fast_fetch_parser_matches_imapclient(runtime: Runtime, mailbox: Mailbox) -> None:
    from imapclient.response_parser import parse_fetch_response
    from mailhelper import imap

    for i in range(3):
        mailbox.append(message(i, 800), flags=(b"\\Seen", b"$Custom") if i else ())
    with mailbox.imap() as c:
        c.normalise_times = False
        c.select_folder("INBOX", readonly=True)
        tag = c._imap._command(
            "UID", "FETCH", "1:*", "(BODY.PEEK[] FLAGS INTERNALDATE RFC822.SIZE)"
        )
        typ, data = c._imap._command_complete("FETCH", tag)
        typ, data = c._imap._untagged_response(typ, data, "FETCH")
    fast = imap.parse_body_fetch(data)
    slow = parse_fetch_response(data, False, True)
    assert fast is not None
    assert set(fast) == set(slow) == {1, 2, 3}
    for uid, entry in fast.items():
        for key in (b"BODY[]", b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE"):
            assert entry[key] == slow[uid][key]
    # the literal-free answers (size listing, flag refresh) agree as well
    with mailbox.imap() as c:
        c.select_folder("INBOX", readonly=True)
        for items in ("(RFC822.SIZE)", "(FLAGS)", "(FLAGS) (CHANGEDSINCE 1)"):
            tag = c._imap._command("UID", "FETCH", "1:*", *items.split(" ", 1))
            typ, data = c._imap._command_complete("FETCH", tag)
            typ, data = c._imap._untagged_response(typ, data, "FETCH")
            quick = imap.parse_plain_fetch(data)
            general = parse_fetch_response(data, False, True)
            assert quick is not None
            assert set(quick) == set(general) == {1, 2, 3}
            for uid, entry in quick.items():
                assert entry == {k: v for k, v in general[uid].items() if k != b"SEQ"}
    assert imap.parse_plain_fetch([(b"1 FETCH (UID 1 BODY[] {2}", b"ab")]) is None
    assert imap.parse_plain_fetch([b"1 FETCH (FLAGS ())"]) is None
    # shapes it does not know are left to the general parser
    assert imap.parse_body_fetch([b"1 FETCH (UID 1 FLAGS ())"]) is None
    assert imap.parse_body_fetch([(b"1 FETCH (UID 1 BODY[] {3}", b"ab"), b")"]) is None
    assert imap.parse_body_fetch([(b"1 FETCH (FLAGS () BODY[] {2}", b"ab"), b")"]) is None
    bad_date = [(b'1 FETCH (UID 1 INTERNALDATE "garbage" BODY[] {2}', b"ab"), b")"]
    assert imap.parse_body_fetch(bad_date) is None


def test_a_message_the_client_cannot_read_does_not_stop_the_folder(
    runtime: Runtime, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A response IMAPClient cannot parse cannot be produced with Dovecot: simulated."""
    from imapclient.exceptions import ProtocolError
    from mailhelper import imap

    uids = [mailbox.append(message(i, 900)) for i in range(5)]
    poisoned = uids[2]
    real_fetch = imap.uid_fetch

    def flaky(client, uid_set, items, modifiers=None):
        if b"BODY.PEEK[]" in items and str(poisoned) in uid_set.replace(":", ",").split(","):
            raise ProtocolError("unparseable response")
        if b"BODY.PEEK[]" in items and ":" in uid_set:
            lo, hi = (int(x) for x in uid_set.split(":"))
            if lo <= poisoned <= hi:
                raise ProtocolError("unparseable response")
        return real_fetch(client, uid_set, items, modifiers)

    monkeypatch.setattr(imap, "uid_fetch", flaky)
    result = runtime.sync.sync_account(mailbox.account_id)
    inbox = next(f for f in result.folders if f.name == "INBOX")
    assert (inbox.new, inbox.skipped) == (4, 1)
    assert set(stored(runtime, mailbox.account_id)) == {("INBOX", u) for u in uids if u != poisoned}
    # the folder moved on: later mail still arrives
    monkeypatch.setattr(imap, "uid_fetch", real_fetch)
    later = mailbox.append(message(9))
    assert runtime.sync.sync_account(mailbox.account_id).new == 1
    assert ("INBOX", later) in stored(runtime, mailbox.account_id)


def test_folder_row_created_concurrently_is_reused(
    any_runtime: Runtime, dovecot: DovecotServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes on SQLite (no advisory lock) may both try to create a folder row:
    the loser of the race sees the unique constraint fire and reuses the winner's row."""
    from mailhelper.sync import MailSyncService

    rt = any_runtime
    box = make_mailbox(rt, dovecot)
    with rt.sessions() as winner, rt.sessions() as loser:
        real_scalar = loser.scalar
        calls = []

        def racing_scalar(*args, **kwargs):
            calls.append(1)
            if len(calls) == 1:  # the loser looked before the winner committed
                MailSyncService._folder_row(winner, box.account_id, "Shared")
                return None
            return real_scalar(*args, **kwargs)

        monkeypatch.setattr(loser, "scalar", racing_scalar)
        got = MailSyncService._folder_row(loser, box.account_id, "Shared")
        ids = winner.scalars(select(Folder.id).where(Folder.name == "Shared")).all()
        assert ids == [got.id]


def test_folder_names_with_spaces_and_non_ascii(runtime: Runtime, mailbox: Mailbox) -> None:
    names = ["Sent Items", "Entwürfe", 'Quote"d']
    for i, name in enumerate(names):
        mailbox.append(message(i), folder=name)
    result = runtime.sync.sync_account(mailbox.account_id)
    assert {f.name: f.new for f in result.folders if f.name != "INBOX"} == dict.fromkeys(names, 1)
    assert runtime.sync.sync_account(mailbox.account_id).new == 0


def test_sync_busy_when_another_process_holds_the_account(
    runtime: Runtime, mailbox: Mailbox
) -> None:
    from mailhelper.errors import SyncBusyError, TransientSyncError
    from mailhelper.locks import account_lock
    from sqlalchemy import text

    runtime.sync.settings = runtime.settings.with_overrides(sync_lock_timeout=0.3)
    with runtime.engine.connect() as other:  # as another worker process would
        other.execute(
            text("SELECT pg_advisory_lock(:ns, :id)"), {"ns": 0x6D68, "id": mailbox.account_id}
        )
        with pytest.raises(SyncBusyError) as info:
            runtime.sync.sync_account(mailbox.account_id)
        assert isinstance(info.value, TransientSyncError)
        other.execute(text("SELECT pg_advisory_unlock_all()"))
    # the in-process lock gives up the same way
    with account_lock(runtime.engine, mailbox.account_id, 1.0):
        done = threading.Event()
        errors: list[BaseException] = []

        def contender() -> None:
            try:
                runtime.sync.sync_account(mailbox.account_id)
            except BaseException as exc:
                errors.append(exc)
            done.set()

        threading.Thread(target=contender).start()
        assert done.wait(10)
    assert isinstance(errors[0], SyncBusyError)
    assert runtime.sync.sync_account(mailbox.account_id).account_id == mailbox.account_id
