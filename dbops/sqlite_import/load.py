"""The load: everything the import writes, in the caller's one transaction.

Clear what `--truncate` replaces (and the content types and permissions `migrate` made), drop
the indexes, keys and foreign keys of big tables, COPY every table from the text SQLite builds
for it, rebuild what was dropped (validating the foreign keys with one join each) and set
every sequence past the largest key. A failure anywhere rolls all of it back, sequences
included.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator

from django.db import DatabaseError

from dbops import pgcopy
from dbops.database import (
    foreign_keys_into,
    restart_sequence_past_largest_key,
    sequence_state,
)
from dbops.sqlite_import import source
from dbops.sqlite_import.fields import NULL
from dbops.sqlite_import.plan import TablePlan
from dbops.sqlite_import.results import ImportFailed, NullProgress, TableResult
from dbops.sqlite_import.workers import Interrupted

COPY_CHUNK_ROWS = 5000
# Tables at least this big are loaded without their indexes, keys and foreign keys.
BULK_LOAD_MIN_ROWS = 10_000
PRINTF_MAX_VALUES = 126  # SQLITE_MAX_FUNCTION_ARG (127), less printf's format


class Load:
    def __init__(
        self,
        connection,
        plans: list[TablePlan],
        sqlite: sqlite3.Connection,
        rows: source.RowCounts,
        progress: NullProgress,
        truncate: bool,
        received_signals: list[str],
    ):
        self.connection, self.plans, self.sqlite, self.rows = connection, plans, sqlite, rows
        self.progress, self.truncate, self.received_signals = progress, truncate, received_signals
        self.results: dict[str, TableResult] = {}

    def run(self) -> dict[str, TableResult]:
        """Write every table (in the caller's transaction); the rows copied, table by table."""
        with self.connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")
            cursor.execute("SET LOCAL TimeZone = 'UTC'")
            cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
            self.clear_target(cursor)
            deferred = self.drop_indexes_and_constraints(cursor)
            for plan in self.plans:
                self.copy_table(cursor, plan)
            self.restore_indexes_and_constraints(cursor, deferred)
        self.reset_sequences()
        return self.results

    def drop_indexes_and_constraints(self, cursor) -> list[str]:
        """Drop the indexes, keys and foreign keys of big tables until the data is in.

        As pg_restore does: building an index once, with one sort, and validating a foreign
        key with one join is far cheaper than maintaining and checking them row by row (the
        primary key's index alone was a quarter of the COPY of 1M food entries). A key that a
        foreign key of a table not dropped here depends on stays. It all happens in the
        import's transaction, so a failure restores them with everything else. Returns the
        statements that recreate them, keys first, foreign keys last.
        """
        big = [
            plan.table
            for plan in self.plans
            if self.rows.of(plan.source_table) >= BULK_LOAD_MIN_ROWS
        ]
        if not big:
            return []
        self.progress.phase(f"Dropping indexes, keys and foreign keys of {', '.join(big)}")
        big = [self.qn(table) for table in big]
        # Run the foreign key checks deferred so far (the rows clear_target deleted): ALTER
        # TABLE refuses a table with checks pending. They are deferred again after.
        self.connection.check_constraints()
        foreign_keys = self.drop_constraints(cursor, "contype = 'f'", big)
        # Now that those are gone: keys that no remaining foreign key refers to.
        keys = self.drop_constraints(
            cursor,
            "contype IN ('p', 'u') AND NOT EXISTS (SELECT 1 FROM pg_constraint f "
            "WHERE f.contype = 'f' AND f.conindid = c.conindid)",
            big,
        )
        # Indexes that belong to no constraint (and that no foreign key refers to).
        cursor.execute(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "WHERE i.indrelid = ANY(%s::regclass[]) AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
            [big],
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f"DROP INDEX {self.qn(name)}")
        return keys + [definition for _, definition in indexes] + foreign_keys

    def drop_constraints(self, cursor, condition: str, tables: list[str]) -> list[str]:
        """Drop the constraints of `tables` (quoted names) that meet `condition` (on
        pg_constraint c); return the statements that add them back."""
        cursor.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            f"FROM pg_constraint c WHERE {condition} AND conrelid = ANY(%s::regclass[])",
            [tables],
        )
        constraints = cursor.fetchall()
        for table, name, _ in constraints:
            cursor.execute(f"ALTER TABLE {self.qn(table)} DROP CONSTRAINT {self.qn(name)}")
        return [
            f"ALTER TABLE {self.qn(table)} ADD CONSTRAINT {self.qn(name)} {definition}"
            for table, name, definition in constraints
        ]

    def restore_indexes_and_constraints(self, cursor, statements: list[str]) -> None:
        if not statements:
            return
        self.progress.phase("Building indexes and keys, validating foreign keys")
        self.connection.check_constraints()  # the copied rows' (see above)
        for statement in statements:
            cursor.execute(statement)

    def clear_target(self, cursor) -> None:
        """With --truncate, empty every imported table in one statement; otherwise only the
        rows `migrate` made in the content types and permissions, which the source's replace
        so that their ids survive."""
        if self.truncate:
            self.progress.phase("Truncating the target tables (--truncate)")
            cursor.execute(f"TRUNCATE {', '.join(self.tables_to_truncate(cursor))}")
            return
        replaced = [plan for plan in self.plans if plan.replaced]
        # Permissions first: they refer to content types.
        for plan in sorted(replaced, key=lambda plan: plan.table != "auth_permission"):
            cursor.execute(f"DELETE FROM {self.qn(plan.table)}")

    def tables_to_truncate(self, cursor) -> list[str]:
        """The imported tables, and the empty tables left out that point into them (TRUNCATE
        must empty those too). Preflight refused tables with rows; one that got rows since
        would lose them, so they are locked and looked at again first."""
        imported = [plan.table for plan in self.plans]
        children = sorted({child for child, _, _ in foreign_keys_into(self.connection, imported)})
        for child in children:
            cursor.execute(f"LOCK TABLE {self.qn(child)} IN ACCESS EXCLUSIVE MODE")
            cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {self.qn(child)})")
            if cursor.fetchone()[0]:
                raise ImportFailed(
                    f"{child} got rows since preflight, and refers to a table --truncate "
                    f"empties; nothing was committed"
                )
        return [self.qn(table) for table in [*imported, *children]]

    def copy_table(self, cursor, plan: TablePlan) -> None:
        """COPY one table from the text lines SQLite builds for it."""
        started = time.monotonic()
        total = self.rows.of(plan.source_table)
        self.progress.start("copying", plan.table, total)
        stream = CopyStream(copy_chunks(self.sqlite, plan), self.progress.advance)
        columns = ", ".join(self.qn(name) for name in plan.column_names)
        try:
            pgcopy.copy_from(
                self.connection,
                cursor,
                f"COPY {self.qn(plan.table)} ({columns}) FROM STDIN",
                stream,
            )
        except DatabaseError:
            # psycopg2 reports an exception raised while reading as a failed COPY; the
            # original (SIGTERM, Ctrl-C, a SQLite error) is the one to report. A signal that
            # lands while psycopg2 sends a chunk is raised as the next read() starts, before
            # CopyStream can see it, so the signal is also looked up where it was received.
            if stream.failure is not None:
                raise stream.failure from None
            if self.received_signals:
                raise Interrupted(f"signal {self.received_signals[0]}") from None
            raise
        self.progress.finish()
        self.results[plan.table] = TableResult(
            table=plan.table,
            source_rows=stream.done,
            seconds=time.monotonic() - started,
            replaced=plan.replaced,
        )

    def reset_sequences(self) -> None:
        """Set every identity past the largest key (1 for an empty table), then check it.

        In the import's transaction, so a failed or killed run leaves every sequence as it
        was (see restart_sequence_past_largest_key)."""
        self.progress.phase("Setting sequences")
        for plan in self.plans:
            if not plan.has_sequence:
                continue
            state = sequence_state(self.connection, plan.table, plan.pk)
            restart_sequence_past_largest_key(self.connection, state, never_backwards=False)
            state = sequence_state(self.connection, plan.table, plan.pk)
            if state.behind:
                raise ImportFailed(
                    f"the sequence of {plan.table} would give {state.next_value}, not past "
                    f"{state.largest}"
                )

    def qn(self, name: str) -> str:
        return self.connection.ops.quote_name(name)


# The fast COPY text: SQLite joins values and rows by bytes that preflight keeps out of the
# values, and Python escapes a whole chunk before it turns them into COPY's own.
VALUE_JOINER, NULL_MARK, ROW_JOINER = b"\x1f", b"\x1e", b"\x00"
# What COPY's text format needs escaped in a value, the backslash first.
COPY_IN_ESCAPES = ((b"\\", b"\\\\"), (b"\t", b"\\t"), (b"\n", b"\\n"), (b"\r", b"\\r"))
NULL_BYTES = NULL.encode()


def copy_chunks(connection: sqlite3.Connection, plan: TablePlan) -> Iterator[tuple[bytes, int]]:
    """A table's COPY text, COPY_CHUNK_ROWS lines at a time, each with its number of lines.

    One way to build the lines: SQLite joins a chunk of rows (source.joined_chunks, keyed by
    the table's rowid) and Python escapes the whole chunk at once (copy_text). A chunk whose
    values hold the joining bytes, and every chunk of a table without a rowid of its own, is
    read value by value and escaped the same way, a value at a time. The order of the lines
    does not matter to COPY.
    """
    table, width = plan.source_table, len(plan.columns)
    values = [column.copy_sql() for column in plan.columns]
    rowid = source.rowid_column(connection, table)
    if rowid is None:
        for rows in source.rows_in_chunks(connection, table, values, COPY_CHUNK_ROWS):
            yield escaped_lines(rows), len(rows)
        return
    nulls = " + ".join(f"({c.quoted} IS NULL)" for c in plan.columns if c.nullable) or "0"
    chunks = source.joined_chunks(
        connection, table, joined_line_sql(plan), rowid, COPY_CHUNK_ROWS, "char(0)", nulls
    )
    for chunk in chunks:
        text = copy_text(chunk.text + ROW_JOINER, chunk.rows, chunk.summed, width)
        if text is None:
            text = escaped_lines(source.rows_of_chunk(connection, table, values, rowid, chunk))
        yield text, chunk.rows


def joined_line_sql(plan: TablePlan) -> str:
    """SQLite expression of a row's COPY values, unescaped, joined by VALUE_JOINER, NULL as
    NULL_MARK (copy_text escapes a chunk of such rows at once: escaping each text value in SQL
    was a third of the cost of the lines).

    One printf builds the line in a single pass, where `a || char(31) || b ...` copies the
    growing line at every step (20% of the copy's time on an 11-column table). Every part is
    text and never NULL (preflight rejects NUL characters, where printf would stop), so both
    give the same line; printf takes at most PRINTF_MAX_VALUES parts, so very wide tables
    concatenate.
    """
    parts = []
    for column in plan.columns:
        value = column.copy_sql()
        parts.append(f"ifnull({value}, char({NULL_MARK[0]}))" if column.nullable else value)
    separator = VALUE_JOINER[0]
    if len(parts) >= PRINTF_MAX_VALUES:
        return f" || char({separator}) || ".join(parts)
    return f"printf('{chr(separator).join(['%s'] * len(parts))}', {', '.join(parts)})"


def copy_escaped(text: bytes) -> bytes:
    """Text as COPY's text format reads it (only the rare values that need it are copied)."""
    for character, escape in COPY_IN_ESCAPES:
        if character in text:
            text = text.replace(character, escape)
    return text


def copy_text(joined: bytes, rows: int, nulls: int, width: int) -> bytes | None:
    """COPY text of `rows` rows of joined_line_sql's values, each row ended by ROW_JOINER,
    holding `nulls` NULLs; None when a value holds one of the joining bytes, so the rows must
    be escaped value by value instead (escaped_lines)."""
    if (
        joined.count(ROW_JOINER) != rows
        or joined.count(VALUE_JOINER) != rows * (width - 1)
        or joined.count(NULL_MARK) != nulls
    ):
        return None
    joined = copy_escaped(joined)
    return joined.replace(VALUE_JOINER, b"\t").replace(NULL_MARK, b"\\N").replace(ROW_JOINER, b"\n")


def escaped_lines(rows: list[tuple]) -> bytes:
    """COPY text of rows of separate values (bytes, or None for NULL)."""
    return b"".join(
        b"\t".join([NULL_BYTES if value is None else copy_escaped(value) for value in row]) + b"\n"
        for row in rows
    )


class CopyStream:
    """File-like reader of the COPY text lines that SQLite builds (see Column.copy_sql)."""

    def __init__(self, chunks: Iterator[tuple[bytes, int]], advance: Callable[[int], None]):
        self.chunks = chunks
        self.advance = advance
        self.done = 0
        self.failure: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            return self.next_chunk()
        except BaseException as exc:
            self.failure = exc
            raise

    def next_chunk(self) -> bytes:
        chunk, rows = next(self.chunks, (b"", 0))
        if rows:
            self.done += rows
            self.advance(self.done)
        return chunk
