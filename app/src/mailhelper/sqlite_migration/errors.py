"""Errors of the migration, each mapped to one exit status (see `command.py`)."""

from __future__ import annotations

from mailhelper.errors import MailHelperError


class MigrationError(MailHelperError):
    """The migration cannot go on (bad source, unreachable target, a value it cannot copy)."""


class SourceRevisionError(MigrationError):
    """The SQLite file is not at the schema revision this version of the app expects."""


class TargetNotEmptyError(MigrationError):
    """The target holds rows (or an interrupted copy) and neither --resume nor --replace."""


class Interrupted(MigrationError):  # noqa: N818 - a state, not a failure of the tool
    """SIGINT or SIGTERM: the last committed batch stays; `--resume` continues from it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}; rerun with --resume to continue")
        self.signum = signum
