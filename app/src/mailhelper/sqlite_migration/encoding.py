"""SQLite values -> PostgreSQL binary COPY fields.

The same encoding is the normal form the verification hashes: a table's checksum is the
digest of its binary COPY stream (rows in primary-key order, columns in target order),
computed from the SQLite rows on one side and read back with `COPY ... TO STDOUT (FORMAT
BINARY)` on the other. Equal digests mean every field arrived byte for byte.

Type care: integers range-checked by `struct`; booleans from SQLite's 0/1; timestamps from
SQLAlchemy's naive text (UTC by the app's convention; an explicit offset is honoured) to
microseconds since 2000-01-01 UTC; BLOBs byte-exact; TEXT validated as UTF-8 without NUL
(PostgreSQL rejects both), otherwise copied byte-exact.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable, Sequence

from mailhelper.sqlite_migration.errors import MigrationError

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
NULL = struct.pack(">i", -1)

_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_PG_EPOCH_NAIVE = dt.datetime(2000, 1, 1)  # naive on purpose
_PG_EPOCH_DATE = dt.date(2000, 1, 1)
_MICRO = dt.timedelta(microseconds=1)
_int2, _int4, _int8, _float8 = (struct.Struct(f">{c}").pack for c in "hiqd")
_len = struct.Struct(">i").pack

Encoder = Callable[[object], bytes]


class ValueError_(MigrationError):  # noqa: N801, N818 - raised per value, wrapped by the caller
    """One value cannot be represented in the target column."""


def _integer(pack: Callable[[int], bytes]) -> Encoder:
    def enc(value: object) -> bytes:
        if type(value) is not int:
            raise ValueError_(f"expected an integer, found {type(value).__name__}")
        try:
            return pack(value)
        except struct.error:
            raise ValueError_(f"integer {value} out of range") from None

    return enc


def _boolean(value: object) -> bytes:
    if value == 1 and type(value) is int:
        return b"\x01"
    if value == 0 and type(value) is int:
        return b"\x00"
    raise ValueError_(f"expected a boolean 0 or 1, found {value!r}")


def _text(value: object) -> bytes:
    if type(value) is bytes:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"text is not valid UTF-8 ({exc.reason} at byte {exc.start})"
            raise ValueError_(reason) from None
        if b"\x00" in value:
            raise ValueError_("text contains a NUL character (PostgreSQL text cannot hold it)")
        return value
    if type(value) in (int, float):
        return str(value).encode()
    raise ValueError_(f"expected text, found {type(value).__name__}")


def _blob(value: object) -> bytes:
    if type(value) is bytes:
        return value
    raise ValueError_(f"expected a BLOB, found {type(value).__name__}")


def parse_timestamp(value: object) -> dt.datetime:
    if type(value) is not bytes:
        raise ValueError_(f"expected a timestamp as text, found {type(value).__name__}")
    try:
        return dt.datetime.fromisoformat(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError_(f"not a timestamp: {value[:40]!r}") from None


def _timestamptz(value: object) -> bytes:
    parsed = parse_timestamp(value)
    if parsed.tzinfo is None:  # SQLAlchemy on SQLite stores UTC without an offset
        return _int8((parsed - _PG_EPOCH_NAIVE) // _MICRO)
    return _int8((parsed - _PG_EPOCH) // _MICRO)


def _timestamp(value: object) -> bytes:
    parsed = parse_timestamp(value)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return _int8((parsed - _PG_EPOCH_NAIVE) // _MICRO)


def _date(value: object) -> bytes:
    day = parse_timestamp(value).date()
    return _int4((day - _PG_EPOCH_DATE).days)


def _float(value: object) -> bytes:
    if type(value) not in (int, float):
        raise ValueError_(f"expected a number, found {type(value).__name__}")
    return _float8(float(value))  # type: ignore[arg-type]


ENCODERS: dict[str, Encoder] = {
    "int2": _integer(_int2),
    "int4": _integer(_int4),
    "int8": _integer(_int8),
    "bool": _boolean,
    "text": _text,
    "varchar": _text,
    "bpchar": _text,
    "bytea": _blob,
    "timestamptz": _timestamptz,
    "timestamp": _timestamp,
    "date": _date,
    "float8": _float,
}


def encoder_for(pg_type: str) -> Encoder:
    try:
        return ENCODERS[pg_type]
    except KeyError:
        raise MigrationError(f"no conversion for PostgreSQL type {pg_type}") from None


class RowEncoder:
    """Appends rows of one table to a buffer in binary COPY tuple format."""

    def __init__(self, table: str, columns: Sequence[str], types: Sequence[str]) -> None:
        self.table = table
        self.columns = tuple(columns)
        self.encoders = tuple(encoder_for(t) for t in types)
        self.tuple_header = _int2(len(columns))
        self.id_index = self.columns.index("id")

    def append(self, out: bytearray, row: Sequence[object]) -> None:
        out += self.tuple_header
        for value, enc, column in zip(row, self.encoders, self.columns, strict=True):
            if value is None:
                out += NULL
                continue
            try:
                data = enc(value)
            except ValueError_ as exc:
                raise MigrationError(
                    f"{self.table} id={row[self.id_index]!r} column {column}: {exc}"
                ) from None
            out += _len(len(data))
            out += data
