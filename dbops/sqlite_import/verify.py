"""Table checksums computed independently on each side, to prove a copy lost nothing.

Each value becomes a canonical text (one form per Django field type, NULL as `\\N`, a value of
a nullable text column after a '='). A table's checksum is the sha256 of its rows in
primary-key order, written the way PostgreSQL's `COPY ... TO STDOUT` writes them: each value
escaped as COPY escapes text, values separated by a tab, rows ended by a newline, and NULL
written as the escaped canonical NULL. PostgreSQL selects each column as a value whose output is
its canonical text and lets COPY write the rows (its own output functions, no text built per
row in SQL); the SQLite side builds the canonical texts from the raw snapshot values (in
SQLite's SQL, or in Python for floats, JSON and IP addresses), joined by U+001F, and escapes
them as COPY would, a chunk of rows at a time. No hash is computed per row on either side: an
md5 per row was a third of PostgreSQL's checksum time, which the import waits for.

The COPY conversion is a third, separate piece of code (and the escaping COPY *into*
PostgreSQL needs is not the one emulated here), so a wrong conversion shows up as a mismatch
instead of being repeated on both sides. Floats are compared by their exact bits, datetimes in
UTC to the microsecond, decimals at their scale.

This verifier is shared by `import_sqlite` and `check_consistency --against`.
"""

from __future__ import annotations

import hashlib
import io
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from dbops import pgcopy
from dbops.sqlite_import import source
from dbops.sqlite_import.fields import NULL
from dbops.sqlite_import.plan import Column, TablePlan

SEPARATOR = "\x1f"
SEPARATOR_BYTES = b"\x1f"
NULL_BYTES = NULL.encode()
# What PostgreSQL's COPY TO writes for a character of a text value (CopyAttributeOutText):
# the backslash and six control characters become escapes, everything else stays as it is.
# The backslash comes first, so that the escapes' own backslashes are not doubled.
COPY_OUT_ESCAPES = (
    (b"\\", b"\\\\"),
    (b"\b", b"\\b"),
    (b"\f", b"\\f"),
    (b"\n", b"\\n"),
    (b"\r", b"\\r"),
    (b"\t", b"\\t"),
    (b"\v", b"\\v"),
)
# Joins the rows of a chunk while they are escaped. PostgreSQL text cannot hold it, so a value
# that does (preflight refuses them; check_consistency --against has no preflight) is digested
# value by value and can only mismatch.
ROW_JOINER = b"\x00"
# What COPY TO writes between two values of a row.
COPY_DELIMITER = b"\t"
TEXT_PK_KINDS = {"CharField", "TextField", "EmailField", "SlugField", "URLField", "FilePathField"}
FETCH_SIZE = 10000
NORMALIZER_CACHE_LIMIT = 100_000


@dataclass
class TableChecksum:
    table: str
    rows: int
    digest: str


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

    @property
    def width(self) -> int:
        return len(self.sql_columns) + len(self.python_columns)

    def canonical_sql(self) -> str:
        """SQLite's part of a row's canonical text: that of the SQL-canonical columns."""
        # Concatenated, not built by printf as the COPY lines are (load.joined_line_sql): the
        # checksum must not share a way of building text with the copy it checks (printf
        # would stop at a NUL exactly where the copy did).
        return " || char(31) || ".join(column.canonical_sql() for column in self.sql_columns)

    def sqlite_expressions(self, separate: bool = False) -> list[str]:
        """SQL of a row's (pk, canonical SQL part, raw Python-canonical values...); with
        `separate`, the SQL part as one canonical text per SQL-canonical column."""
        if separate:
            sql = [column.canonical_sql() for column in self.sql_columns]
        else:
            sql = [self.canonical_sql()]
        return [self.pk.quoted, *sql, *(column.quoted for column in self.python_columns)]

    def sqlite_query(self) -> str:
        expressions = ", ".join(self.sqlite_expressions())
        return f'SELECT {expressions} FROM "{self.source_table}" ORDER BY {self.pk.quoted}'

    def postgresql_values(self, qn, as_text: bool = False) -> list[str]:
        """SQL of each column's canonical value in PostgreSQL (as text with `as_text`), marked
        by '=' where text could read as NULL."""
        values = []
        for c in [*self.sql_columns, *self.python_columns]:
            value = c.postgresql_text(qn(c.name)) if as_text else c.postgresql_value(qn(c.name))
            values.append(f"'=' || {value}" if c.text_could_read_as_null else value)
        return values

    def postgresql_query(self, qn) -> str:
        """The canonical values of each row, a column each, in key order (for COPY TO)."""
        values = ", ".join(self.postgresql_values(qn))
        return f"SELECT {values} FROM {qn(self.table)} {self.key_order(qn)}"

    def postgresql_digest_query(self, qn) -> str:
        """(key, md5 of the canonical row joined by U+001F) in key order, as sqlite_row_digests
        gives them: for finding the first differing row."""
        texts = self.postgresql_values(qn, as_text=True)
        canonical = " || chr(31) || ".join(f"COALESCE({text}, '{NULL}')" for text in texts)
        return (
            f"SELECT {qn(self.pk.name)}, md5({canonical}) FROM {qn(self.table)} "
            f"{self.key_order(qn)}"
        )

    def key_order(self, qn) -> str:
        # SQLite orders text by its bytes; so does PostgreSQL's "C" collation, and only it.
        collate = ' COLLATE "C"' if self.pk.kind in TEXT_PK_KINDS else ""
        return f"ORDER BY {qn(self.pk.name)}{collate}"

    def canonical_rows(self) -> CanonicalRows:
        return CanonicalRows([column.python_canonical() for column in self.python_columns])


def layout_of(plan: TablePlan) -> RowLayout:
    """The row layout of a table to import (its plan says which columns, read how)."""
    return RowLayout.of(plan.table, plan.columns, plan.pk, plan.source_table)


class CanonicalRows:
    """The canonical texts (as bytes) of rows of `RowLayout.sqlite_query()`."""

    def __init__(self, normalizers: list[Callable[[object], str]]):
        self.normalizers = [_as_bytes(normalize) for normalize in normalizers]

    def text(self, row) -> bytes:
        """The row's canonical values joined by U+001F."""
        return SEPARATOR_BYTES.join(self.values(row, sql_values=1))

    def values(self, row, sql_values: int) -> list[bytes]:
        """The canonical value of each column of a row whose first `sql_values` items after
        the key are SQL-canonical texts (separate ones, or one joined)."""
        values = [ROW_JOINER if value is None else value for value in row[1 : 1 + sql_values]]
        # None: NULL in a NOT NULL column (check_consistency --against has no preflight) gave
        # the joiner, which PostgreSQL text cannot hold, so the row can only mismatch.
        for normalize, value in zip(self.normalizers, row[1 + sql_values :], strict=True):
            values.append(NULL_BYTES if value is None else normalize(value))
        return values

    def joined(self, rows) -> bytes:
        """The rows' canonical texts, each ended by ROW_JOINER (see TableDigest.add_joined)."""
        if not self.normalizers and all(row[1] is not None for row in rows):
            texts = [row[1] for row in rows]
        else:
            text = self.text
            texts = [text(row) for row in rows]
        return ROW_JOINER.join(texts) + ROW_JOINER


class TableDigest:
    """sha256 of a table's canonical rows as COPY TO writes them, and the number of rows."""

    def __init__(self, width: int):
        self.outer = hashlib.sha256()
        self.rows = 0
        self.separators_per_row = width - 1

    def add_copy_output(self, data: bytes) -> None:
        """Rows exactly as PostgreSQL's COPY TO sent them (a newline cannot be unescaped)."""
        self.outer.update(data)
        self.rows += data.count(b"\n")

    def add_joined(self, chunk: bytes, rows: int) -> bool:
        """Rows each ended by ROW_JOINER in `chunk`, their values joined by U+001F, escaped
        as COPY TO would have written them; False, and nothing added, when a value holds the
        joiner or the separator too (see add_values)."""
        if chunk.count(ROW_JOINER) != rows:
            return False
        if chunk.count(SEPARATOR_BYTES) != rows * self.separators_per_row:
            return False
        escaped = copy_out_escaped(chunk)
        self.outer.update(
            escaped.replace(SEPARATOR_BYTES, COPY_DELIMITER).replace(ROW_JOINER, b"\n")
        )
        self.rows += rows
        return True

    def add_values(self, rows: list[list[bytes]]) -> None:
        """Rows of canonical values, each value escaped alone: for values holding the joiner
        or the separator. A joiner stays in the row, which can then only mismatch, as the row
        could not have been stored in PostgreSQL either."""
        for values in rows:
            line = COPY_DELIMITER.join([copy_out_escaped(value) for value in values])
            self.outer.update(line + b"\n")
        self.rows += len(rows)

    def checksum(self, table: str) -> TableChecksum:
        return TableChecksum(table, self.rows, self.outer.hexdigest())


def copy_out_escaped(text: bytes) -> bytes:
    """`text` as PostgreSQL's COPY TO writes a text value."""
    for character, escape in COPY_OUT_ESCAPES:
        if character in text:
            text = text.replace(character, escape)
    return text


# PostgreSQL writes this for a NULL: what the SQLite side's canonical NULL becomes once escaped
# (an E'' literal, whatever standard_conforming_strings says).
ESCAPED_NULL_SQL = "E'" + copy_out_escaped(NULL_BYTES).decode().replace("\\", "\\\\") + "'"


def _as_bytes(normalize: Callable[[object], str]) -> Callable[[object], bytes]:
    return cached(lambda value: normalize(value).encode())


def sqlite_row_digests(connection: sqlite3.Connection, layout: RowLayout) -> Iterator[tuple]:
    """(primary key, md5 hex of the canonical row) for each row of a SQLite table, in pk order."""
    canonical = layout.canonical_rows()
    cursor = connection.execute(layout.sqlite_query())
    while rows := cursor.fetchmany(FETCH_SIZE):
        for row in rows:
            yield row[0], hashlib.md5(canonical.text(row), usedforsecurity=False).hexdigest()


def sqlite_table_checksum(connection: sqlite3.Connection, layout: RowLayout) -> TableChecksum:
    """Checksum of a table of the snapshot, a chunk of rows at a time (canonical_chunks). A
    chunk whose values hold the joining bytes, or that holds a NULL canonical row, is read
    again and digested value by value, so it can only mismatch if it is wrong."""
    digest = TableDigest(layout.width)
    for joined, rows, separately in canonical_chunks(connection, layout):
        if joined is None or not digest.add_joined(joined, rows):
            digest.add_values(separately())
    return digest.checksum(layout.table)


def canonical_chunks(
    connection: sqlite3.Connection, layout: RowLayout
) -> Iterator[tuple[bytes | None, int, Callable[[], list[list[bytes]]]]]:
    """(canonical rows each ended by ROW_JOINER, their number, how to read them value by
    value) for every FETCH_SIZE rows of a table in key order.

    When the key is the table's rowid and every column is SQL-canonical, SQLite joins the
    rows (source.joined_chunks: 20% less work than a Python object per row); otherwise Python
    joins them. A NULL canonical row (NULL in a NOT NULL column: check_consistency --against
    has no preflight) leaves the joined chunk None.
    """
    table, key = layout.source_table, layout.pk.quoted
    canonical = layout.canonical_rows()
    separate, sql_values = layout.sqlite_expressions(separate=True), len(layout.sql_columns)

    def values(rows) -> list[list[bytes]]:
        return [canonical.values(row, sql_values) for row in rows]

    if not layout.python_columns and source.rowid_column(connection, table) == key:
        chunks = source.joined_chunks(
            connection, table, layout.canonical_sql(), key, FETCH_SIZE, "char(0)"
        )
        for chunk in chunks:

            def again(chunk=chunk):
                return values(source.rows_of_chunk(connection, table, separate, key, chunk))

            yield (None if chunk.nulls else chunk.text + ROW_JOINER), chunk.rows, again
        return
    rows_chunks = source.rows_in_chunks(
        connection, table, layout.sqlite_expressions(), FETCH_SIZE, order_by=key
    )
    for rows in rows_chunks:
        first, last = rows[0][0], rows[-1][0]

        def again(first=first, last=last):
            return values(source.rows_in_range(connection, table, separate, key, first, last, True))

        yield canonical.joined(rows), len(rows), again


def postgresql_table_checksum(connection: BaseDatabaseWrapper, layout: RowLayout) -> TableChecksum:
    """Checksum of a PostgreSQL table, streamed with COPY so no table is held in memory."""
    query = layout.postgresql_query(connection.ops.quote_name)
    sink = DigestSink(layout.width)
    with canonical_cursor(connection) as cursor:
        pgcopy.copy_to(
            connection, cursor, f"COPY ({query}) TO STDOUT (NULL {ESCAPED_NULL_SQL})", sink
        )
    return sink.digest.checksum(layout.table)


@contextmanager
def canonical_cursor(connection: BaseDatabaseWrapper):
    """A cursor whose session prints dates and times in the ISO DateStyle, which the canonical
    texts are (a session's DateStyle could be 'SQL' or 'German'). SET LOCAL needs a
    transaction: outside one, atomic() opens it and the setting ends with it; inside the
    caller's, it lasts until that one ends (harmless to an import)."""
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.execute("SET LOCAL DateStyle = ISO")
        yield cursor


class DigestSink(io.RawIOBase):
    """File-like end of `COPY ... TO STDOUT` that only feeds a TableDigest."""

    def __init__(self, width: int):
        self.digest = TableDigest(width)

    def writable(self):
        return True

    def write(self, data):
        chunk = bytes(data)
        self.digest.add_copy_output(chunk)
        return len(chunk)


def first_difference(
    sqlite_connection: sqlite3.Connection, pg_connection: BaseDatabaseWrapper, layout: RowLayout
) -> str | None:
    """The first primary key (in order) whose row differs, or exists on one side only."""
    source = sqlite_row_digests(sqlite_connection, layout)
    with canonical_cursor(pg_connection) as cursor:
        cursor.execute(layout.postgresql_digest_query(pg_connection.ops.quote_name))
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
