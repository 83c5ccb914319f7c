"""The `mailhelper` command line (scripts and playbooks rely on these exact forms)."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from mailhelper import __version__, db
from mailhelper.accounts import TLS_MODES, add_account
from mailhelper.config import load_settings
from mailhelper.errors import (
    ConfigError,
    KeyProviderError,
    MailHelperError,
    PermanentSyncError,
    TransientSyncError,
)
from mailhelper.headers import parse_headers
from mailhelper.mailbox import iter_index, raw_bytes, text_body
from mailhelper.models import MailAccount, Message, User
from mailhelper.rotation import rotate_keys
from mailhelper.runtime import Runtime, build_runtime, resolve_settings
from mailhelper.sqlite_migration import command as migrate_sqlite
from mailhelper.users import create_user, get_user_by_email

EXIT_ERROR = 1
EXIT_PERMANENT = 3
EXIT_TRANSIENT = 75  # EX_TEMPFAIL: try again later


def read_secret(prompt: str, *, confirm: bool = False) -> str:
    """A secret from stdin (first line) or, on a terminal, typed without echo."""
    if sys.stdin.isatty():
        value = getpass.getpass(prompt)
        if confirm and getpass.getpass("again: ") != value:
            raise MailHelperError("the two entries differ")
        return value
    line = sys.stdin.readline()
    value = line.rstrip("\r\n")
    if not value:
        raise MailHelperError("expected the secret on the first line of stdin")
    return value


def cmd_db(args: argparse.Namespace) -> int:
    settings = resolve_settings(load_settings(), migrator=True)
    url = (
        settings.database_url
        if settings.production
        else settings.migrator_database_url or settings.database_url
    )
    if args.db_command == "upgrade":
        db.upgrade(url, args.revision)
        print(f"database upgraded to {args.revision}")
    else:
        db.downgrade(url, args.revision)
        print(f"database downgraded to {args.revision}")
    return 0


def cmd_create_user(args: argparse.Namespace, rt: Runtime) -> int:
    password = read_secret("password for the new user: ", confirm=True)
    with rt.sessions() as session:
        user = create_user(session, rt.ciphers, args.email, password)
        print(user.id)
    return 0


def cmd_add_account(args: argparse.Namespace, rt: Runtime) -> int:
    password = read_secret("IMAP password: ")
    with rt.sessions() as session:
        user = get_user_by_email(session, args.user)
        account = add_account(
            session,
            rt.ciphers,
            user,
            host=args.host,
            port=args.port,
            tls_mode=args.tls,
            username=args.username,
            password=password,
        )
        print(account.id)
    return 0


def cmd_sync(args: argparse.Namespace, rt: Runtime) -> int:
    try:
        result = rt.sync.sync_account(args.account, force=True)
    except PermanentSyncError as exc:
        print(f"mailhelper: permanent sync error: {exc}", file=sys.stderr)
        return EXIT_PERMANENT
    except TransientSyncError as exc:
        print(f"mailhelper: transient sync error (retry later): {exc}", file=sys.stderr)
        return EXIT_TRANSIENT
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    for f in result.folders:
        state = " (resynced: UIDVALIDITY changed)" if f.resynced else ""
        print(
            f"{f.name}: {f.new} new, {f.flags_updated} flags updated, "
            f"{f.deleted} deleted, {f.skipped} skipped{state}"
        )
    for name in result.removed_folders:
        print(f"{name}: folder removed on the server")
    print(f"total: {result.new} new in {result.seconds:.2f} s")
    return 0


def cmd_list_messages(args: argparse.Namespace, rt: Runtime) -> int:
    with rt.sessions() as session:
        rows = iter_index(session, args.account)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            print(f"{r['id']}\t{r['folder']}\t{r['uid']}\t{r['size']}\t{r['message_id'] or ''}")
    return 0


def cmd_show_message(args: argparse.Namespace, rt: Runtime) -> int:
    with rt.sessions() as session:
        msg = session.get(Message, args.id)
        if msg is None:
            raise MailHelperError(f"no message {args.id}")
        account = session.get(MailAccount, msg.account_id)
        assert account is not None  # noqa: S101 - foreign key
        user = session.get(User, account.user_id)
        assert user is not None  # noqa: S101 - foreign key
        data = raw_bytes(rt.ciphers, user, msg)
    if args.raw:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        h = parse_headers(data)
        print(f"From: {h.sender}\nSubject: {h.subject}\nMessage-ID: {h.message_id or ''}\n")
        print(text_body(data))
    return 0


def cmd_rotate_keys(_args: argparse.Namespace, rt: Runtime) -> int:
    with rt.sessions() as session:
        result = rotate_keys(session, rt.keys, rt.ciphers)
    print(
        f"rotated the {rt.keys.name} master key; rewrapped {result.rewrapped} of "
        f"{result.users} data keys"
    )
    return 0


def cmd_serve(args: argparse.Namespace, rt: Runtime) -> int:
    from mailhelper.web import create_app

    if rt.settings.production:
        print(
            "mailhelper: serve is the development server; production runs gunicorn", file=sys.stderr
        )
    elif rt.engine.dialect.name == "sqlite":
        db.upgrade(rt.settings.database_url)  # embedded default: ready in one command
    app = create_app(rt)
    print(f"serving on http://{args.host}:{args.port}/ (data in {rt.settings.data_dir})")
    app.run(host=args.host, port=args.port, debug=False, use_reloader=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mailhelper", description=__doc__)
    p.add_argument("--version", action="version", version=f"mailhelper {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)

    dbp = sub.add_parser("db", help="schema migrations (Alembic)")
    dbsub = dbp.add_subparsers(dest="db_command", required=True)
    up = dbsub.add_parser("upgrade", help="migrate the schema to the newest revision")
    up.add_argument("--revision", default="head")
    down = dbsub.add_parser("downgrade", help="migrate the schema back")
    down.add_argument("--revision", required=True)

    cu = sub.add_parser("create-user", help="create a user (password from stdin)")
    cu.add_argument("--email", required=True)

    aa = sub.add_parser("add-account", help="add an IMAP account (password from stdin)")
    aa.add_argument("--user", required=True, help="the owner's e-mail address")
    aa.add_argument("--host", required=True)
    aa.add_argument("--port", required=True, type=int)
    aa.add_argument("--tls", required=True, choices=TLS_MODES)
    aa.add_argument("--username", required=True)

    sy = sub.add_parser("sync", help="sync one account in the foreground")
    sy.add_argument("--account", required=True, type=int)
    sy.add_argument("--json", action="store_true")

    lm = sub.add_parser("list-messages", help="list an account's messages")
    lm.add_argument("--account", required=True, type=int)
    lm.add_argument("--json", action="store_true")

    sm = sub.add_parser("show-message", help="print one message")
    sm.add_argument("--id", required=True, type=int)
    sm.add_argument("--raw", action="store_true", help="the decrypted RFC 822 bytes")

    sub.add_parser("rotate-keys", help="rotate the master key and rewrap all data keys")

    migrate_sqlite.add_parser(sub)  # needs no key provider and no settings

    sv = sub.add_parser("serve", help="development web server")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", default=5000, type=int)
    return p


COMMANDS: dict[str, Callable[[argparse.Namespace, Runtime], int]] = {
    "create-user": cmd_create_user,
    "add-account": cmd_add_account,
    "sync": cmd_sync,
    "list-messages": cmd_list_messages,
    "show-message": cmd_show_message,
    "rotate-keys": cmd_rotate_keys,
    "serve": cmd_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    rt: Any = None
    try:
        if args.command == "db":
            return cmd_db(args)
        if args.command == "migrate-sqlite":
            return migrate_sqlite.run(args)
        rt = build_runtime()
        return COMMANDS[args.command](args, rt)
    except ConfigError as exc:
        print(f"mailhelper: configuration error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyProviderError as exc:
        print(f"mailhelper: key provider error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except MailHelperError as exc:
        print(f"mailhelper: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if rt is not None:
            rt.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
