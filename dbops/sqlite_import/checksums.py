"""Table checksums computed independently on each side, to prove a copy lost nothing.

Each row becomes a canonical text (one form per Django field type, NULL as `\\N`, columns
joined by U+001F), hashed with md5 per row; the per-row digests of a table, in primary-key
order, are hashed again with sha256. The SQLite side builds the canonical text from the raw
snapshot values (in SQLite's SQL, or in Python for decimals, floats, JSON and IP addresses);
the PostgreSQL side builds it in SQL from what the server stores. The COPY conversion is a
third, separate piece of code, so a wrong conversion shows up as a mismatch instead of being
repeated on both sides. Floats are compared by their exact bits, datetimes in UTC to the
microsecond, decimals at their scale.

This verifier is shared by `import_sqlite` and `check_consistency --against`.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import sqlite3
import struct
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from django.db.backends.base.base import BaseDatabaseWrapper

from dbops.sqlite_import.columns import NULL, Column

SEPARATOR = "\x1f"
SEPARATOR_BYTES = b"\x1f"
NULL_BYTES = NULL.encode()
TEXT_PK_KINDS = {"CharField", "TextField", "EmailField", "SlugField", "URLField", "FilePathField"}
FETCH_SIZE = 10000
NORMALIZER_CACHE_LIMIT = 100_000


@dataclass
class TableChecksum:
    table: str
    rows: int
    digest: str


# --------------------------------------------------------------------------- Python canonicals


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _float(value) -> str:
    return struct.pack(">d", float(value)).hex()


def _jsonb_text(value) -> str:
    """Render a parsed JSON value the way PostgreSQL prints jsonb."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda key: (len(key.encode()), key.encode()))
        return "{" + ", ".join(f"{_jsonb_text(k)}: {_jsonb_text(value[k])}" for k in keys) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_jsonb_text(item) for item in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    return format(value, "f")


def _json(value) -> str:
    return _jsonb_text(json.loads(_text(value), parse_float=Decimal, parse_int=Decimal))


def _ip(value) -> str:
    return str(ipaddress.ip_address(_text(value)))


def cached(normalize: Callable[[object], str]) -> Callable[[object], str]:
    """Memoise a normaliser: decimals and the like repeat a lot in real data."""
    cache: dict = {}

    def lookup(value):
        key = (type(value), value)
        try:
            return cache[key]
        except KeyError:
            if len(cache) >= NORMALIZER_CACHE_LIMIT:
                cache.clear()
            result = cache[key] = normalize(value)
            return result

    return lookup


def python_normalizer(kind: str) -> Callable[[object], str]:
    return {"FloatField": _float, "JSONField": _json, "GenericIPAddressField": _ip}[kind]


# --------------------------------------------------------------------------- PostgreSQL canonicals


def postgresql_expression(kind: str, column: str) -> str:
    """SQL giving the canonical text of a PostgreSQL column of the given type."""
    if kind == "BooleanField":
        return f"CASE WHEN {column} THEN 't' WHEN NOT {column} THEN 'f' END"
    if kind == "DateTimeField":
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
    if kind == "DateField":
        return f"to_char({column}, 'YYYY-MM-DD')"
    if kind == "TimeField":
        return f"to_char({column}::interval, 'HH24:MI:SS.US')"
    if kind == "FloatField":
        return f"encode(float8send({column}), 'hex')"
    if kind == "DurationField":
        return f"(extract(epoch from {column}) * 1000000)::numeric(40, 0)::text"
    if kind == "UUIDField":
        return f"replace({column}::text, '-', '')"
    if kind == "BinaryField":
        return f"encode({column}, 'hex')"
    if kind == "GenericIPAddressField":
        return f"host({column})"
    return f"{column}::text"


# --------------------------------------------------------------------------- the row layout


@dataclass
class RowLayout:
    """Columns in canonical order: the primary key, other SQL-canonical ones, then Python ones."""

    table: str
    pk: Column
    sql_columns: list[Column]
    python_columns: list[Column]
    source_table: str = ""

    @classmethod
    def of(
        cls, table: str, columns: list[Column], pk_name: str, source_table: str = ""
    ) -> RowLayout:
        pk = next(column for column in columns if column.name == pk_name)
        others = [column for column in columns if column is not pk]
        return cls(
            table=table,
            pk=pk,
            sql_columns=[pk, *(c for c in others if not c.canonical_in_python)],
            python_columns=[c for c in others if c.canonical_in_python],
            source_table=source_table or table,
        )

    def sqlite_query(self, extra: str = "") -> str:
        """Rows of (pk, canonical SQL part, raw Python-canonical values..., extra...)."""
        # Concatenated, not built by printf as the COPY lines are (copy_line_sql): the
        # checksum must not share a way of building text with the copy it checks.
        joined = " || char(31) || ".join(column.canonical_sql() for column in self.sql_columns)
        raw = "".join(f", {column.quoted}" for column in self.python_columns)
        extra = f", {extra}" if extra else ""
        pk = self.pk.quoted
        return f'SELECT {pk}, {joined}{raw}{extra} FROM "{self.source_table}" ORDER BY {pk}'

    def postgresql_query(self, qn, with_pk: bool = False) -> str:
        parts = [
            f"COALESCE({postgresql_expression(c.kind, qn(c.name))}, '{NULL}')"
            for c in [*self.sql_columns, *self.python_columns]
        ]
        # SQLite orders text by its bytes; so does PostgreSQL's "C" collation, and only it.
        collate = ' COLLATE "C"' if self.pk.kind in TEXT_PK_KINDS else ""
        pk = f"{qn(self.pk.name)}, " if with_pk else ""
        return (
            f"SELECT {pk}md5({' || chr(31) || '.join(parts)}) "
            f"FROM {qn(self.table)} ORDER BY {qn(self.pk.name)}{collate}"
        )

    def digester(self) -> RowDigester:
        return RowDigester([column.python_canonical() for column in self.python_columns])


class RowDigester:
    """Hashes rows of `RowLayout.sqlite_query()` (text as bytes) into a table checksum."""

    def __init__(self, normalizers: list[Callable[[object], str]]):
        self.normalizers = [_as_bytes(normalize) for normalize in normalizers]
        self.outer = hashlib.sha256()
        self.rows = 0

    def row_digest(self, row) -> str:
        canonical = row[1]
        if self.normalizers:
            parts = [canonical]
            for normalize, value in zip(self.normalizers, row[2:], strict=False):
                parts.append(NULL_BYTES if value is None else normalize(value))
            canonical = SEPARATOR_BYTES.join(parts)
        return hashlib.md5(canonical, usedforsecurity=False).hexdigest()

    def add_rows(self, rows) -> None:
        digest = self.row_digest
        digests = [digest(row) for row in rows]
        if digests:
            self.outer.update(("\n".join(digests) + "\n").encode())
        self.rows += len(digests)

    def checksum(self, table: str) -> TableChecksum:
        return TableChecksum(table, self.rows, self.outer.hexdigest())


def _as_bytes(normalize: Callable[[object], str]) -> Callable[[object], bytes]:
    return cached(lambda value: normalize(value).encode())


def sqlite_row_digests(connection: sqlite3.Connection, layout: RowLayout) -> Iterator[tuple]:
    """(primary key, md5 hex of the canonical row) for each row of a SQLite table, in pk order."""
    digester = layout.digester()
    cursor = connection.execute(layout.sqlite_query())
    while rows := cursor.fetchmany(FETCH_SIZE):
        for row in rows:
            yield row[0], digester.row_digest(row)


def sqlite_table_checksum(connection: sqlite3.Connection, layout: RowLayout) -> TableChecksum:
    digester = layout.digester()
    cursor = connection.execute(layout.sqlite_query())
    while rows := cursor.fetchmany(FETCH_SIZE):
        digester.add_rows(rows)
    return digester.checksum(layout.table)


def postgresql_table_checksum(connection: BaseDatabaseWrapper, layout: RowLayout) -> TableChecksum:
    """Checksum of a PostgreSQL table, streamed with COPY so no table is held in memory."""
    query = layout.postgresql_query(connection.ops.quote_name)
    sink = _DigestSink()
    with connection.cursor() as cursor, connection.wrap_database_errors:
        cursor.cursor.copy_expert(f"COPY ({query}) TO STDOUT", sink)
    return TableChecksum(layout.table, sink.rows, sink.outer.hexdigest())


class _DigestSink(io.RawIOBase):
    """Receives `md5<LF>` lines from COPY: exactly what the SQLite side feeds its sha256."""

    def __init__(self):
        self.outer = hashlib.sha256()
        self.rows = 0

    def writable(self):
        return True

    def write(self, data):
        chunk = bytes(data)
        self.outer.update(chunk)
        self.rows += chunk.count(b"\n")
        return len(chunk)


def first_difference(
    sqlite_connection: sqlite3.Connection, pg_connection: BaseDatabaseWrapper, layout: RowLayout
) -> str | None:
    """The first primary key (in order) whose row differs, or exists on one side only."""
    source = sqlite_row_digests(sqlite_connection, layout)
    with pg_connection.cursor() as cursor:
        cursor.execute(layout.postgresql_query(pg_connection.ops.quote_name, with_pk=True))
        while target_rows := cursor.fetchmany(FETCH_SIZE):
            for target_pk, target_digest in target_rows:
                target_pk = comparable_key(target_pk)
                source_row = next(source, None)
                if source_row is None:
                    return str(target_pk)
                source_pk = comparable_key(source_row[0])
                if source_pk != target_pk or source_row[1] != target_digest:
                    return str(min(source_pk, target_pk))
    leftover = next(source, None)
    return None if leftover is None else str(comparable_key(leftover[0]))


def comparable_key(value):
    """A primary key as both sides can compare and order it.

    SQLite gives text as bytes (text_factory=bytes) and UUIDs as 32 hex digits; psycopg2 gives
    str and uuid.UUID. Code-point order of str is the byte order of its UTF-8, which is how
    both sides sort text keys.
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, uuid.UUID):
        return value.hex
    return value
