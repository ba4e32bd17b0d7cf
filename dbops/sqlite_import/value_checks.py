"""Preflight's look at every value: each column's checks, the CHECK constraints, and text
encoding, found in SQLite, every problem counted and shown with a sample of rows.

The checks run inside SQLite, as SQL (see fields.py): one scan per table that stops at the
first bad value, a big table's second half of rows in a child process; only the tables where
a scan found something are then read again for the full count and the samples.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

from dbops.envinfo import shorten
from dbops.sqlite_import import source
from dbops.sqlite_import.fields import NUL_IN_TEXT, Check
from dbops.sqlite_import.plan import Column, TableCheck, TablePlan
from dbops.sqlite_import.results import NullProgress
from dbops.sqlite_import.workers import Workers

SAMPLES_PER_COLUMN = 5
# Tables at least this big have their values checked in two processes, half the rows each.
SPLIT_CHECKS_MIN_ROWS = 10_000
TEXT_SCAN_CHUNK_ROWS = 5000


@dataclass
class ValueProblems:
    """Bad values grouped by table, column and reason: a capped sample and the full count."""

    groups: dict[tuple[str, str, str], list] = field(default_factory=dict)

    def add(self, table: str, pk: Any, column: str, value: Any, reason: str) -> None:
        group = self.groups.setdefault((table, column, reason), [0, []])
        group[0] += 1
        if len(group[1]) < SAMPLES_PER_COLUMN:
            group[1].append((source.as_text(pk, "backslashreplace"), shorten(value)))

    def add_uncounted(self, table: str, column: str, reason: str, count: int) -> None:
        """Set a group's total when only a sample of its rows was added one by one."""
        self.groups.setdefault((table, column, reason), [0, []])[0] = count

    @property
    def total(self) -> int:
        return sum(count for count, _ in self.groups.values())

    def lines(self) -> list[str]:
        lines = []
        for (table, column, reason), (count, samples) in self.groups.items():
            examples = "; ".join(f"pk {pk}: {value}" for pk, value in samples)
            more = f" (and {count - len(samples)} more)" if count > len(samples) else ""
            lines.append(f"{table}.{column}: {count} value(s) {reason}: {examples}{more}")
        return lines


class ValueScan:
    """The value checks of a set of tables, run on the snapshot (and a child for halves)."""

    def __init__(
        self,
        plans: list[TablePlan],
        sqlite: sqlite3.Connection,
        rows: source.RowCounts,
        workers: Workers,
        progress: NullProgress,
    ):
        self.plans, self.sqlite, self.rows = plans, sqlite, rows
        self.workers, self.progress = workers, progress

    def tables_with_bad_values_in_halves(self) -> set[str]:
        """Every column's checks, inside SQLite: a scan per table that stops at the first bad
        value, a big table's second half of rows in a child process (see row_halves). The
        checks for NUL characters are left to check_text_encoding."""
        halves = {
            plan.table: row_halves(self.sqlite, plan.source_table, self.rows.of(plan.source_table))
            for plan in self.plans
        }
        second = self.workers.read(lambda sqlite: self.tables_with_bad_values(sqlite, halves, 1))
        flagged = self.tables_with_bad_values(self.sqlite, halves, 0, self.progress)
        return flagged | second.result()

    def value_problems(self, flagged: set[str]) -> ValueProblems:
        """The full count and a sample of each check, NUL characters included, for the tables
        where a bad value may be."""
        found = ValueProblems()
        for plan in self.plans:
            if plan.table not in flagged:
                continue
            checks = checks_of(plan)
            conditions = [condition for _, _, condition in checks]
            conditions += [check.bad_sql() for check in plan.checks]
            sums = ", ".join(f"sum({condition})" for condition in conditions)
            counts = self.sqlite.execute(f'SELECT {sums} FROM "{plan.source_table}"').fetchone()
            value_counts, check_counts = counts[: len(checks)], counts[len(checks) :]
            for (column, check, condition), count in zip(checks, value_counts, strict=True):
                if count:
                    self.record_bad_values(found, plan, column, check, condition)
            for check, count in zip(plan.checks, check_counts, strict=True):
                if count:
                    self.record_rows_breaking(found, plan, check, count)
        return found

    def record_rows_breaking(self, found, plan: TablePlan, check: TableCheck, count: int) -> None:
        """A sample of the rows breaking a CHECK constraint, with the columns it reads."""
        columns = [plan.column(name).quoted for name in check.columns]
        rows = self.sqlite.execute(
            f'SELECT {", ".join([plan.source_pk, *columns])} FROM "{plan.source_table}" '
            f"WHERE {check.bad_sql()} ORDER BY {plan.source_pk} LIMIT {SAMPLES_PER_COLUMN}"
        )
        label = "+".join(check.columns) or "(row)"
        reason = f"breaking the CHECK constraint {check.name}"
        for pk, *values in rows:
            value = values[0] if len(values) == 1 else tuple(values)
            found.add(plan.where, pk, label, value, reason)
        found.add_uncounted(plan.where, label, reason, count)

    def tables_with_bad_values(
        self,
        connection: sqlite3.Connection,
        halves: dict[str, tuple[str, str | None]],
        half: int,
        progress: NullProgress | None = None,
    ) -> set[str]:
        """Tables where any check finds a bad value in one half (0 or 1) of their rows. Only
        the parent process passes `progress` (and counts rows for it)."""
        flagged = set()
        for plan in self.plans:
            if progress is not None:
                progress.start("checking", plan.table, self.rows.of(plan.source_table))
            rows = halves[plan.table][half]
            checks = checks_of(plan)
            conditions = [condition for _, check, condition in checks if check is not NUL_IN_TEXT]
            conditions += [check.bad_sql() for check in plan.checks]
            if rows is not None and conditions:
                any_bad = " OR ".join(f"({condition})" for condition in conditions)
                query = (
                    f'SELECT EXISTS (SELECT 1 FROM "{plan.source_table}" '
                    f"WHERE {rows} AND ({any_bad}))"
                )
                if connection.execute(query).fetchone()[0]:
                    flagged.add(plan.table)
            if progress is not None:
                progress.advance(self.rows.of(plan.source_table))
                progress.finish()
        return flagged

    def record_bad_values(self, found, plan, column, check, condition) -> None:
        rows = self.sqlite.execute(
            f'SELECT {plan.source_pk}, {column.quoted} FROM "{plan.source_table}" '
            f"WHERE {condition} ORDER BY {plan.source_pk}"
            + ("" if check.recheck else f" LIMIT {SAMPLES_PER_COLUMN}")
        )
        if check.recheck is None:
            count = self.sqlite.execute(
                f'SELECT count(*) FROM "{plan.source_table}" WHERE {condition}'
            ).fetchone()[0]
            for pk, value in rows:
                found.add(plan.where, pk, column.name, value, check.reason)
            found.add_uncounted(plan.where, column.name, check.reason, count)
            return
        for pk, value in rows:
            reason = check.recheck(value)
            if reason is not None:
                found.add(plan.where, pk, column.name, value, reason)

    def check_text_encoding(self, connection: sqlite3.Connection) -> tuple[list[str], set[str]]:
        """Text that is not valid UTF-8 (SQLite stores whatever bytes it was given), and the
        tables that may hold a NUL character (PostgreSQL text cannot), whose values
        value_problems then checks one by one.

        Python reads each table's text a chunk of rows at a time (scan_text). Only where a
        chunk is not valid UTF-8 does SQL find the values with a character outside printable
        ASCII, and Python decode each.
        """
        found = ValueProblems()
        may_hold_nul = set()
        for plan in self.plans:
            scanned = [column for column in plan.columns if column.rule.reads_text]
            if not scanned:
                continue
            scan = scan_text(connection, plan, scanned)
            if scan is None or scan.holds_nul:
                may_hold_nul.add(plan.table)
            text_columns = [column for column in plan.columns if column.rule.is_text]
            if not text_columns or (scan is not None and scan.valid_utf8):
                continue
            # One scan per table, however many text columns it has; a column's value comes
            # back only when it is text with a character outside printable ASCII.
            suspects = [
                f"CASE WHEN typeof({c.quoted}) = 'text' AND {c.quoted} GLOB '*[^ -~]*' "
                f"THEN {c.quoted} END AS suspect_{number}"
                for number, c in enumerate(text_columns)
            ]
            any_suspect = " OR ".join(
                f"suspect_{number} IS NOT NULL" for number in range(len(text_columns))
            )
            rows = connection.execute(
                f"SELECT * FROM (SELECT {plan.source_pk}, {', '.join(suspects)} "
                f'FROM "{plan.source_table}") WHERE {any_suspect}'
            )
            for pk, *values in rows:
                for column, value in zip(text_columns, values, strict=True):
                    if value is None:
                        continue
                    try:
                        value.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        reason = f"invalid UTF-8 (byte {exc.start})"
                        found.add(plan.where, pk, column.name, value, reason)
        return found.lines(), may_hold_nul


@dataclass
class TextScan:
    holds_nul: bool = False
    valid_utf8: bool = True


def scan_text(
    connection: sqlite3.Connection, plan: TablePlan, columns: list[Column]
) -> TextScan | None:
    """Whether any value of these columns holds a NUL character, and whether every one
    decodes as UTF-8, read a chunk of rows at a time (source.joined_chunks); None for a table
    not keyed by its rowid, which cannot be read so.

    Python looks at a chunk's bytes in a call or two, where SQLite's GLOB for a character
    outside printable ASCII cost 20 ns a character, and a search for a NUL per value cost as
    much as a datetime's whole check. Values are joined by a newline, so bytes of two values
    cannot make one valid character.
    """
    rowid = source.rowid_column(connection, plan.source_table)
    if rowid is None:
        return None
    values = " || char(10) || ".join(f"ifnull({column.quoted}, '')" for column in columns)
    chunks = source.joined_chunks(
        connection, plan.source_table, values, rowid, TEXT_SCAN_CHUNK_ROWS, "char(10)"
    )
    scan = TextScan()
    for text, *_ in chunks:
        scan.holds_nul = scan.holds_nul or b"\x00" in text
        if scan.valid_utf8 and not text.isascii():
            try:
                text.decode("utf-8")
            except UnicodeDecodeError:
                scan.valid_utf8 = False
    return scan


def row_halves(connection: sqlite3.Connection, table: str, rows: int) -> tuple[str, str | None]:
    """SQL conditions that split a table's rows in two halves of its rowid range.

    Halving the rows, not the checks, gives two processes the same work whatever the checks
    cost (a datetime's check costs several times an integer's). A small table, and one without a
    rowid of its own (WITHOUT ROWID, or with a column called rowid), is one "half" and None.
    """
    whole = ("1", None)
    rowid = source.rowid_column(connection, table) if rows >= SPLIT_CHECKS_MIN_ROWS else None
    if rowid is None:
        return whole
    low, high = connection.execute(f'SELECT min({rowid}), max({rowid}) FROM "{table}"').fetchone()
    if low is None:
        return whole
    middle = (low + high) // 2
    return f"{rowid} <= {middle}", f"{rowid} > {middle}"


def checks_of(plan: TablePlan) -> list[tuple[Column, Check, str]]:
    """(column, check, SQL condition true for a bad value) of every check of a table."""
    return [
        (column, check, condition)
        for column in plan.columns
        for check, condition in column.problem_conditions()
    ]
