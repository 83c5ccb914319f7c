"""The `mailhelper` command line (scripts and playbooks rely on these exact forms)."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mailhelper import __version__, db, job_reconciler
from mailhelper.accounts import TLS_MODES, add_account
from mailhelper.config import load_settings
from mailhelper.cutoff import NOW_ENV, cutoff_report, parse_now
from mailhelper.errors import (
    ConfigError,
    KeyProviderError,
    MailHelperError,
    PermanentSyncError,
    TransientSyncError,
)
from mailhelper.headers import parse_headers
from mailhelper.job_runs import PENDING, SUCCESS, TERMINAL
from mailhelper.mailbox import iter_index, raw_bytes, text_body
from mailhelper.models import JobRun, MailAccount, Message, User, utcnow
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


def cmd_enqueue_sync(args: argparse.Namespace, rt: Runtime) -> int:
    with rt.sessions() as session:
        account = session.get(MailAccount, args.account)
        if account is None:
            raise MailHelperError(f"no account {args.account}")
        user_id = account.user_id
    job = rt.jobs.submit_sync(user_id, args.account, force=True)
    deadline = time.monotonic() + args.wait
    while job.status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.2)
        with rt.sessions() as session:
            job = session.get(JobRun, job.id) or job
    view = {
        "id": job.id,
        "backend": job.backend,
        "status": job.status,
        "attempts": job.attempts,
        "error": job.error,
    }
    print(json.dumps(view) if args.json else f"job {job.id}: {job.backend} {job.status}")
    if job.status in TERMINAL:
        return 0 if job.status == SUCCESS else EXIT_PERMANENT
    return EXIT_TRANSIENT if args.wait and job.status == PENDING else 0


def cmd_reconcile_jobs(args: argparse.Namespace, rt: Runtime) -> int:
    result = job_reconciler.reconcile(rt)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['orphaned']} orphaned legacy jobs claimed, {result['requeued']} pending "
            f"jobs handed over, {result['still_pending']} still pending"
        )
    return EXIT_TRANSIENT if result["still_pending"] else 0


def cmd_cutoff_report(args: argparse.Namespace, rt: Runtime) -> int:
    raw_now = args.now or os.environ.get(NOW_ENV)
    try:
        now = parse_now(raw_now) if raw_now else utcnow()
    except ValueError as exc:
        raise MailHelperError(f"--now / {NOW_ENV}: {exc}") from None
    with rt.sessions() as session:
        report = cutoff_report(session, rt.settings, days=args.days, now=now)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    flags = report["flags"]
    print(f"window: {report['window']['start']} .. {report['window']['end']}")
    print(
        f"phase {flags['phase']}: USE_LEGACY_JOBS={flags['USE_LEGACY_JOBS']} "
        f"LEGACY_FALLBACK={flags['LEGACY_FALLBACK']}"
    )
    for name, b in report["backends"].items():
        rate = "-" if b["success_rate"] is None else f"{b['success_rate'] * 100:.2f} %"
        lat = b["latency_ms"]["enqueue_to_start"]
        print(f"{name}: {b['total']} jobs, success {rate}, enqueue->start p95 {lat['p95']} ms")
    print(f"last legacy job: {report['last_legacy_job_at']}")
    return 0


def cmd_phase(args: argparse.Namespace, rt: Runtime) -> int:
    from mailhelper.phase_history import record_transition, summary

    raw_now = args.now or os.environ.get(NOW_ENV)
    try:
        now = parse_now(raw_now) if raw_now else utcnow()
    except ValueError as exc:
        raise MailHelperError(f"--now / {NOW_ENV}: {exc}") from None
    with rt.sessions() as session:
        if args.phase_command == "record":
            record_transition(
                session,
                to_phase=args.to_phase,
                from_phase=args.from_phase,
                actor=args.actor,
                source=args.source,
                forced=args.forced,
                reason=args.reason,
                at=now,
            )
            session.commit()
        result = summary(session, now=now)
    print(json.dumps(result, indent=2))
    return 0


def cmd_ping_workers(args: argparse.Namespace, rt: Runtime) -> int:
    """Which Celery workers answer a ping (the phase 1 gate asks); exit 75 when none does."""
    replies = rt.jobs.celery.control.ping(timeout=args.timeout)
    names = sorted(name for reply in replies for name in reply)
    print(json.dumps({"workers": names}))
    return 0 if names else EXIT_TRANSIENT


def cmd_worker(args: argparse.Namespace) -> int:
    from mailhelper.processes import run_worker, worker_argv
    from mailhelper.vault import WORKER_SECRETS

    settings = resolve_settings(load_settings(), secrets=WORKER_SECRETS)
    argv = worker_argv(
        settings,
        concurrency=args.concurrency,
        max_tasks_per_child=args.max_tasks_per_child,
        hostname=args.hostname,
        loglevel=args.loglevel,
        include=args.include,
    )
    return run_worker(settings, argv)


def cmd_beat(args: argparse.Namespace) -> int:
    from mailhelper.processes import run_beat
    from mailhelper.vault import WORKER_SECRETS

    settings = resolve_settings(load_settings(), secrets=WORKER_SECRETS)
    return run_beat(settings, schedule=args.schedule, loglevel=args.loglevel)


def cmd_flower(args: argparse.Namespace) -> int:
    from mailhelper.processes import flower_credentials, run_flower
    from mailhelper.vault import FLOWER_SECRETS

    settings = resolve_settings(load_settings(), secrets=FLOWER_SECRETS)
    return run_flower(
        settings,
        address=args.address,
        port=args.port,
        url_prefix=args.url_prefix,
        db=args.db,
        basic_auth=flower_credentials(settings),
    )


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
    es = sub.add_parser("enqueue-sync", help="queue a sync of one account (dispatcher)")
    es.add_argument("--account", required=True, type=int)
    es.add_argument("--wait", type=float, default=0, help="seconds to wait for the outcome")
    es.add_argument("--json", action="store_true")

    rj = sub.add_parser(
        "reconcile-jobs", help="re-dispatch orphaned legacy jobs, hand pending jobs over again"
    )
    rj.add_argument("--json", action="store_true")

    ph = sub.add_parser("phase", help="the recorded history of the job-queue phases")
    phsub = ph.add_subparsers(dest="phase_command", required=True)
    phs = phsub.add_parser("show", help="print the current recorded phase and its history (JSON)")
    phs.add_argument("--now", help=f"ISO 8601 time (tests; or {NOW_ENV})")
    phr = phsub.add_parser("record", help="record a transition (the phase playbooks do)")
    phr.add_argument("--to", dest="to_phase", type=int, required=True, choices=[0, 1, 2, 3])
    phr.add_argument("--from", dest="from_phase", type=int, choices=[0, 1, 2, 3])
    phr.add_argument("--actor", required=True, help="who moved the stack")
    phr.add_argument("--source", default="", help="e.g. the playbook")
    phr.add_argument("--forced", action="store_true", help="a gate was overridden")
    phr.add_argument("--reason", help="required with --forced")
    phr.add_argument("--now", help=f"ISO 8601 time of the transition (tests; or {NOW_ENV})")

    pw = sub.add_parser("ping-workers", help="list the Celery workers that answer (JSON)")
    pw.add_argument("--timeout", type=float, default=3.0)

    cr = sub.add_parser("cutoff-report", help="job figures for the phase gates")
    cr.add_argument("--days", type=float, default=7.0)
    cr.add_argument("--json", action="store_true")
    cr.add_argument("--now", help=f"ISO 8601 time to report at (tests; or {NOW_ENV})")

    wk = sub.add_parser("worker", help="Celery worker (systemd: mail-helper-celery-worker)")
    wk.add_argument("--concurrency", type=int, help="pool processes (config default)")
    wk.add_argument("--max-tasks-per-child", type=int, help="recycle a pool process after N")
    wk.add_argument("--hostname", help="node name, e.g. worker1@%%h")
    wk.add_argument("--loglevel", default="INFO")
    wk.add_argument("--include", action="append", default=[], help="extra task module")

    bt = sub.add_parser("beat", help="Celery beat (systemd: mail-helper-celery-beat)")
    bt.add_argument("--schedule", type=Path, help="schedule state file")
    bt.add_argument("--loglevel", default="INFO")

    fl = sub.add_parser("flower", help="Flower (systemd: mail-helper-celery-flower)")
    fl.add_argument("--address", help="listen address (MAILHELPER_FLOWER_ADDRESS)")
    fl.add_argument("--port", type=int, help="listen port (MAILHELPER_FLOWER_PORT)")
    fl.add_argument("--url-prefix", help="path prefix behind a proxy")
    fl.add_argument("--db", type=Path, help="Flower state file (MAILHELPER_FLOWER_DB)")

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
    "enqueue-sync": cmd_enqueue_sync,
    "reconcile-jobs": cmd_reconcile_jobs,
    "cutoff-report": cmd_cutoff_report,
    "phase": cmd_phase,
    "ping-workers": cmd_ping_workers,
}
PROCESSES: dict[str, Callable[[argparse.Namespace], int]] = {
    "worker": cmd_worker,
    "beat": cmd_beat,
    "flower": cmd_flower,
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
        if args.command in PROCESSES:
            return PROCESSES[args.command](args)
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
