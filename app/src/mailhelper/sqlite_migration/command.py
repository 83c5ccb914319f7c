"""`mailhelper migrate-sqlite`: argument parsing, signals, report output and exit status.

Exit status (a playbook branches on these; the JSON report says the same in `status`):

    0   copied (or, with --verify-only, compared) and every table and the schema match
    1   error: unreadable source, unreachable target, a value that cannot be copied, ...
    2   bad command line (argparse)
    4   verification mismatch (row count, checksum or schema)
    5   target not empty: refused without --resume or --replace
    6   the source is not at the schema revision this version expects
    130 interrupted by SIGINT, 143 by SIGTERM: rerun with --resume
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import psycopg
import sqlalchemy.exc

from mailhelper.config import load_settings, url_with_password
from mailhelper.errors import ConfigError, KeyProviderError
from mailhelper.sqlite_migration.errors import (
    Interrupted,
    MigrationError,
    SourceRevisionError,
    TargetNotEmptyError,
)
from mailhelper.sqlite_migration.progress import Progress
from mailhelper.sqlite_migration.runner import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_ROWS,
    MigrationOptions,
    MigrationReport,
    run_migration,
)
from mailhelper.sqlite_migration.segments import STREAMS
from mailhelper.sqlite_migration.target_url import RedactingFilter, Redactor, parse_target
from mailhelper.vault import migrator_password, migrator_session

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_MISMATCH = 4
EXIT_TARGET_NOT_EMPTY = 5
EXIT_SOURCE_REVISION = 6

log = logging.getLogger("mailhelper.migrate_sqlite")


def add_parser(sub: Any) -> None:
    """Register the sub-command on the `mailhelper` parser."""
    p = sub.add_parser(
        "migrate-sqlite",
        help="copy an SQLite installation into PostgreSQL and verify it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--source", required=True, type=Path, help="the SQLite database file")
    p.add_argument(
        "--target",
        required=True,
        help="postgresql://USER[:PASSWORD]@HOST[:PORT]/DB (password optional: PGPASSWORD, "
        "a libpq passfile or ?service=NAME work too; it is never printed)",
    )
    p.add_argument(
        "--target-password-from-vault",
        action="store_true",
        help="take the password of the --target URL from Vault KV (postgresql-migrator/"
        "password) with the app's configuration and the migrator's AppRole login "
        "(vault-migrator-role-id/-secret-id), as `mailhelper db upgrade` does; the URL then "
        "carries no password",
    )
    p.add_argument("--report", type=Path, help="write the JSON report to this file")
    p.add_argument("--json", action="store_true", help="print the JSON report on stdout")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--verify-only", action="store_true", help="compare, do not copy")
    mode.add_argument("--resume", action="store_true", help="continue an interrupted copy")
    mode.add_argument("--replace", action="store_true", help="empty the target tables first")
    p.add_argument("--batch-rows", type=int, default=DEFAULT_BATCH_ROWS, help=argparse.SUPPRESS)
    p.add_argument("--batch-bytes", type=int, default=DEFAULT_BATCH_BYTES, help=argparse.SUPPRESS)
    p.add_argument("--streams", type=int, default=STREAMS, help=argparse.SUPPRESS)


def _with_vault_password(url: str) -> str:
    """The URL with the migrator password read from Vault KV, never from a command line."""
    settings = load_settings()
    if not settings.vault.addr:
        raise ConfigError("--target-password-from-vault needs VAULT_ADDR in the configuration")
    password = migrator_password(migrator_session(settings.vault))
    return url_with_password(url, password)


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def _signals() -> Iterator[None]:
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, _raise_interrupted)
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def _redacted_logging(redact: Redactor) -> Iterator[None]:
    filt = RedactingFilter(redact)
    handlers = logging.getLogger().handlers
    for h in handlers:
        h.addFilter(filt)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(filt)


def write_report(path: Path, doc: dict[str, Any]) -> None:
    """Atomically (temporary file + rename), so a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def print_table(report: MigrationReport, out: TextIO) -> None:
    if report.tables:
        head = f"{'table':<14} {'rows':>10}  {'checksum source':<18} {'checksum target':<18}"
        out.write(f"{head} status\n")
        for t in report.tables:
            rows = (
                str(t["rows_source"])
                if t["rows_source"] == t["rows_target"]
                else (f"{t['rows_source']}/{t['rows_target']}")
            )
            out.write(
                f"{t['table']:<14} {rows:>10}  {t['checksum_source'][:16]:<18} "
                f"{t['checksum_target'][:16]:<18} {t['status']}\n"
            )
        schema = report.schema
        out.write(f"{'(schema)':<14} {'':>10}  {'':<18} {'':<18} {schema.get('status', '-')}\n")
        for d in schema.get("differences", []):
            out.write(f"  schema difference: {d}\n")
    out.write(f"status: {report.status}")
    out.write(f" ({report.message})\n" if report.message else "\n")


def run(args: argparse.Namespace) -> int:
    """Entry point from `mailhelper.cli`; returns the exit status."""
    redact = Redactor()
    try:
        raw = args.target
        if args.target_password_from_vault:
            raw = _with_vault_password(raw)
        target = parse_target(raw)
    except (MigrationError, ConfigError, KeyProviderError) as exc:
        print(f"mailhelper: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    redact = Redactor(target.secrets)
    report = MigrationReport(
        source=str(args.source),
        target=target.display,
        mode="verify-only" if args.verify_only else "copy",
    )
    opts = MigrationOptions(
        source=args.source,
        target=target,
        verify_only=args.verify_only,
        resume=args.resume,
        replace=args.replace,
        batch_rows=max(1, args.batch_rows),
        batch_bytes=max(1, args.batch_bytes),
        streams=max(1, args.streams),
    )
    progress = Progress(sys.stderr)
    with _redacted_logging(redact):
        try:
            with _signals():
                run_migration(opts, progress, report)
            report.exit_code = EXIT_OK if report.status == "ok" else EXIT_MISMATCH
        except (Interrupted, KeyboardInterrupt) as exc:
            signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
            report.status, report.exit_code = "interrupted", 128 + signum
            report.message = f"interrupted by signal {signum}; rerun with --resume to continue"
        except TargetNotEmptyError as exc:
            report.status, report.exit_code = "refused", EXIT_TARGET_NOT_EMPTY
            report.message = str(exc)
        except SourceRevisionError as exc:
            report.status, report.exit_code = "error", EXIT_SOURCE_REVISION
            report.message = str(exc)
        except (MigrationError, psycopg.Error, sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
            report.status, report.exit_code = "error", EXIT_ERROR
            report.message = f"{type(exc).__name__}: {exc}".strip()
            log.debug("migrate-sqlite failed", exc_info=True)
        if report.message:
            report.message = redact(report.message)
        report.finished_at = dt.datetime.now(dt.UTC).isoformat()
        doc = report.to_dict()
        if args.report:
            write_report(args.report, doc)
        if args.json:
            print(json.dumps(doc, indent=2))
        else:
            print_table(report, sys.stdout)
        if report.exit_code not in (EXIT_OK, EXIT_MISMATCH):
            print(f"mailhelper: migrate-sqlite: {report.message}", file=sys.stderr)
        return report.exit_code
