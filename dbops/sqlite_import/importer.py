"""Move a SQLite database into PostgreSQL: preflight, one-transaction COPY, verify, record.

The flow is the one every dbops command follows: snapshot the source, find *every* problem
before writing anything, copy all tables in one transaction with COPY (streaming; big tables
without their indexes, keys and foreign keys, which are rebuilt and validated in the same
transaction, small ones with foreign keys checked at commit), set every sequence past its
largest key, prove each table arrived intact with independent checksums, and only then
commit. Each step is a method that tests can call.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import DatabaseError, connections, transaction
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder

from dbops import pgcopy
from dbops.database import restart_sequence_past_largest_key, sequence_state
from dbops.sqlite_import import source, verify
from dbops.sqlite_import.fields import (
    NUL_IN_TEXT,
    NULL,
    Check,
    UnsupportedField,
    shorten,
)
from dbops.sqlite_import.mapping import (
    Mapping,
    MappingError,
    builtin_mappings,
    load_mapping,
    looks_like,
    mapped_plans,
    resolve_models,
)
from dbops.sqlite_import.plan import (
    Column,
    PlanError,
    TableCheck,
    TablePlan,
    build_plan,
    unique_column_sets,
)

SAMPLES_PER_COLUMN = 5
KEY_CHECK_CACHE_KIB = 16 * 1024
COPY_CHUNK_ROWS = 5000
# Tables at least this big are loaded without their indexes, keys and foreign keys.
BULK_LOAD_MIN_ROWS = 10_000
# Tables at least this big have their values checked in two processes, half the rows each.
SPLIT_CHECKS_MIN_ROWS = 10_000
PRINTF_MAX_VALUES = 126  # SQLITE_MAX_FUNCTION_ARG (127), less printf's format
SUCCEEDED, FAILED = "succeeded", "failed"  # what a child process sends back
PR_SET_PDEATHSIG = 1  # prctl(2)


class ImportFailed(Exception):
    """The import stopped; nothing was committed. `problems` lists every reason found."""

    def __init__(self, summary: str, problems: list[str] | None = None):
        super().__init__(summary)
        self.summary = summary
        self.problems = problems or []


class ChildFailed(ImportFailed):
    """A child process reading the snapshot failed (`died`: it ended without an answer)."""

    def __init__(self, summary: str, reason: str, died: bool):
        super().__init__(summary)
        self.reason, self.died = reason, died


class Interrupted(BaseException):
    """SIGTERM or Ctrl-C arrived; raised like KeyboardInterrupt so every transaction rolls
    back."""


# --------------------------------------------------------------------------- problems


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


# --------------------------------------------------------------------------- results


@dataclass
class TableResult:
    table: str
    source_rows: int = 0
    target_rows: int | None = None
    source_checksum: str = ""
    target_checksum: str | None = None
    seconds: float = 0.0
    replaced: bool = False

    @property
    def matches(self) -> bool | None:
        if self.target_checksum is None:
            return None
        return self.source_rows == self.target_rows and (
            self.source_checksum == self.target_checksum
        )

    @property
    def rows_per_second(self) -> float:
        return self.source_rows / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {
            "table": self.table,
            "source_rows": self.source_rows,
            "target_rows": self.target_rows,
            "source_checksum": self.source_checksum,
            "target_checksum": self.target_checksum,
            "checksum_match": self.matches,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
        }


@dataclass
class ImportOptions:
    source_path: Path
    database: str = "default"
    dry_run: bool = False
    truncate: bool = False
    excludes: list[str] = field(default_factory=list)
    snapshot_dir: Path | None = None
    mapping: str | None = None
    source_timezone: str = "UTC"
    integrity_check: str = source.QUICK_CHECK
    keep_snapshot: bool = False  # a dry run's; a real run's is always kept


class NullProgress:
    """Progress reporting interface; the command supplies a real one."""

    def phase(self, message: str) -> None:
        pass

    def start(self, label: str, table: str, total: int) -> None:
        pass

    def advance(self, rows: int) -> None:
        pass

    def finish(self) -> None:
        pass


# --------------------------------------------------------------------------- the import


class SqliteImport:
    def __init__(self, options: ImportOptions, progress: NullProgress | None = None):
        self.options = options
        self.progress = progress or NullProgress()
        self.connection = connections[options.database]
        self.snapshot: source.Snapshot | None = None
        self.sealing: ForkedRead | None = None
        self.sqlite: sqlite3.Connection | None = None
        self.plans: list[TablePlan] = []
        self.skipped: list[str] = []
        self.results: dict[str, TableResult] = {}
        self.mapping: Mapping | None = None
        self.children: list[ForkedRead] = []
        self.received_signals: list[str] = []
        self.source_row_counts: dict[str, int] = {}
        self.source_checksums: ForkedRead | None = None

    # -- the whole run

    def run(self) -> list[TableResult]:
        """Preflight, then (unless a dry run) copy, verify and commit. Raises ImportFailed."""
        try:
            with signals_raise_interrupted() as self.received_signals:
                self.prepare()
                self.preflight()
                if self.options.dry_run:
                    self.seal_snapshot()
                else:
                    self.copy_verify_commit()
        finally:
            try:
                # A failed run is recorded with its snapshot's sha256 too; an interrupted one
                # does not wait for it.
                unsealed = self.snapshot is not None and not self.snapshot.sha256
                if unsealed and not self.received_signals:
                    with suppress(ImportFailed):
                        self.seal_snapshot()
            finally:
                for child in self.children:
                    child.stop()
                if self.sqlite is not None:
                    self.sqlite.close()
                if self.options.dry_run and not self.options.keep_snapshot and self.snapshot:
                    # A dry run changes nothing, so it leaves nothing either (a full copy of
                    # the source each time filled the backup disk).
                    source.remove_snapshot_files(self.snapshot.path)
                    self.snapshot.removed = True
        return list(self.results.values())

    def prepare(self) -> None:
        mapping = None
        try:
            if self.options.mapping:
                if self.options.excludes:
                    raise PlanError("--exclude does not apply to a mapped import")
                # A mapping naming a missing model or field fails before anything is read.
                mapping = load_mapping(self.options.mapping)
                resolve_models(mapping)
            else:
                self.plans, self.skipped = build_plan(self.options.excludes)
        except (PlanError, UnsupportedField, MappingError) as exc:
            raise ImportFailed(str(exc)) from None
        source.stop_memory_statistics()
        self.progress.phase(f"Taking a snapshot of {self.options.source_path}")
        try:
            self.snapshot = source.take_snapshot(
                self.options.source_path, self.options.snapshot_dir
            )
        except source.SourceError as exc:
            raise ImportFailed(str(exc)) from None
        self.sealing = self.read_in_child(lambda _: source.seal(self.snapshot.path))
        self.sqlite = source.open_snapshot(self.snapshot)
        if mapping is not None:
            self.mapping = mapping
            try:
                self.plans, self.skipped = mapped_plans(
                    mapping, self.source_schema(), self.options.source_timezone
                )
            except MappingError as exc:
                raise ImportFailed(str(exc)) from None

    def seal_snapshot(self) -> None:
        """Wait for the child that syncs the snapshot to disk and computes its sha256.

        Only a child that never got to seal it (it died, or could not open the snapshot) is
        replaced by a seal here. One whose fsync failed is not retried: Linux reports lost
        writes once, so a second fsync would pass while the snapshot is not on disk.
        """
        if self.snapshot.sha256:
            return
        if self.sealing is not None:
            try:
                self.snapshot.sha256 = self.sealing.result()
                return
            except ChildFailed as failure:
                if not failure.died:
                    raise self.unsealed(failure.reason) from None
            except sqlite3.DatabaseError:
                pass
        try:
            self.snapshot.sha256 = source.seal(self.snapshot.path)
        except OSError as exc:
            raise self.unsealed(exc.strerror or str(exc)) from None

    def unsealed(self, reason: str) -> ImportFailed:
        return ImportFailed(
            f"the snapshot {self.snapshot.path} could not be written to disk ({reason}); "
            f"nothing was committed"
        )

    def source_schema(self) -> dict[str, list[str]]:
        """Each source table (SQLite's own excepted) with its column names."""
        return {
            table: source.table_columns(self.sqlite, table)
            for table in sorted(source.table_names(self.sqlite))
            if not table.startswith("sqlite_")
        }

    # -- preflight: read-only on both sides, every problem collected

    def read_in_child(self, read: Callable[[sqlite3.Connection], Any]) -> ForkedRead:
        child = ForkedRead(self.snapshot, read)
        self.children.append(child)
        return child

    def preflight(self) -> None:
        # Child processes check integrity, keys and text encoding, and the values of the second
        # half of every big table's rows, while this process checks the rest: preflight uses
        # every core.
        mode = self.options.integrity_check
        self.progress.phase(
            f"Checking the snapshot's integrity ({source.INTEGRITY_PRAGMAS[mode]}, "
            f"in the background)"
        )
        integrity = self.read_in_child(lambda sqlite: source.integrity_problems(sqlite, mode))
        try:
            problems = self.check_target()
            if self.mapping is None and source.applied_migrations(self.sqlite) is None:
                # Not a database of this project: the list of missing tables would be noise.
                raise ImportFailed("the source is not a database of this project", [
                    f"{self.options.source_path} has no django_migrations table, so it is not "
                    f"a database of this project; a database of another schema needs "
                    f"--mapping{self.suggested_mapping()}"
                ])  # fmt: skip
            if self.mapping is None:
                problems += self.check_migrations()
                problems += self.check_tables_and_columns()
            if not problems:
                self.progress.phase(
                    "Checking foreign keys, unique values and text encoding (in the background)"
                )
                key_checks = self.read_in_child(self.check_keys_and_encoding)
                self.progress.phase("Checking every value against its target column")
                flagged = self.tables_with_bad_values_in_halves()
                key_problems, may_hold_nul = key_checks.result()
                problems += key_problems + self.value_problems(flagged | may_hold_nul).lines()
        except sqlite3.DatabaseError:
            problems = ["the source could not be read while checking it"]
        damage = integrity.result()
        if damage:
            # A damaged file makes every other finding doubtful: report the damage alone.
            raise ImportFailed(
                "the source database is damaged",
                [f"source integrity check: {message}" for message in damage],
            )
        if problems:
            raise ImportFailed(
                f"preflight found {len(problems)} problem(s); nothing was written", problems
            )

    def check_target(self) -> list[str]:
        self.progress.phase("Checking the target database")
        problems = []
        if self.connection.vendor != "postgresql":
            return [
                f"target database '{self.options.database}' is {self.connection.vendor}; "
                f"import_sqlite writes to PostgreSQL only"
            ]
        try:
            executor = MigrationExecutor(self.connection)
        except Exception as exc:  # noqa: BLE001 - unreachable, or no permission
            return [
                f"target database '{self.options.database}' is unreachable ({type(exc).__name__})"
            ]
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        if plan:
            names = ", ".join(f"{m.app_label}.{m.name}" for m, _ in plan[:5])
            problems.append(
                f"target database is not fully migrated ({len(plan)} unapplied: {names}); "
                f"run 'manage.py migrate --database {self.options.database}' first"
            )
            return problems
        non_empty = [
            plan.table
            for plan in self.plans
            if not plan.replaced and self.target_has_rows(plan.table)
        ]
        if non_empty and not self.options.truncate:
            problems.append(
                "target tables are not empty: "
                + ", ".join(non_empty)
                + "; import into an empty database, or pass --truncate to replace their rows"
            )
        return problems

    def target_has_rows(self, table: str) -> bool:
        with self.connection.cursor() as cursor:
            cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {self.qn(table)})")
            return cursor.fetchone()[0]

    def check_migrations(self) -> list[str]:
        source_applied = source.applied_migrations(self.sqlite)
        apps_imported = {plan.app_label for plan in self.plans}
        target_applied = set(MigrationRecorder(self.connection).applied_migrations())
        only_source = sorted(m for m in source_applied - target_applied if m[0] in apps_imported)
        only_target = sorted(m for m in target_applied - source_applied if m[0] in apps_imported)
        problems = []
        if only_source:
            problems.append(
                "migrations applied in the source but not in the target: "
                + ", ".join(f"{app}.{name}" for app, name in only_source)
                + f"; update this code base, then run 'manage.py migrate --database "
                f"{self.options.database}'"
            )
        if only_target:
            problems.append(
                "migrations applied in the target but not in the source: "
                + ", ".join(f"{app}.{name}" for app, name in only_target)
                + "; run 'manage.py migrate' against the SQLite database first (with "
                "DATABASE_URL=sqlite:////path/to/it), then import again"
            )
        return problems

    def suggested_mapping(self) -> str:
        schema = self.source_schema()
        for name in sorted(builtin_mappings()):
            try:
                if looks_like(load_mapping(name), schema):
                    return f" (it looks like the legacy schema: try --mapping {name})"
            except MappingError:
                continue
        return ""

    def check_tables_and_columns(self) -> list[str]:
        tables = source.table_names(self.sqlite)
        problems = []
        for plan in self.plans:
            if plan.table not in tables:
                problems.append(f"source has no table {plan.table} (model {plan.label})")
                continue
            present = set(source.table_columns(self.sqlite, plan.table))
            missing = [name for name in plan.column_names if name not in present]
            if missing:
                problems.append(f"source table {plan.table} lacks column(s) {', '.join(missing)}")
        return problems

    def check_keys_and_encoding(self, connection: sqlite3.Connection) -> tuple[list[str], set]:
        """Problems with foreign keys, unique values and text encoding, and the tables that may
        hold a NUL character (see check_text_encoding)."""
        # A foreign key check looks up every row's parent: with SQLite's default 2 MiB page
        # cache, the pages of a parent table of a few MiB were read again and again (a third of
        # the check's time went to read() calls). The cache is a ceiling, not an allocation.
        connection.execute(f"PRAGMA cache_size = -{KEY_CHECK_CACHE_KIB}")
        problems = self.check_foreign_keys(connection) + self.check_unique_values(connection)
        encoding_problems, may_hold_nul = self.check_text_encoding(connection)
        return problems + encoding_problems, may_hold_nul

    def check_foreign_keys(self, connection: sqlite3.Connection) -> list[str]:
        problems = []
        imported = {plan.table for plan in self.plans}
        for plan in self.plans:
            for column, target_table, _ in plan.foreign_keys:
                if target_table not in imported:
                    problems.append(
                        f"{plan.table}.{column} refers to {target_table}, which is excluded; "
                        f"exclude {plan.label} too, or import both"
                    )
            rows = connection.execute(f'PRAGMA foreign_key_check("{plan.source_table}")').fetchall()
            if not rows:
                continue
            dangling = ValueProblems()
            for _, rowid, parent, fk_index in rows:
                pk, column, value = self.describe_dangling(connection, plan, rowid, fk_index)
                reason = f"point at missing rows of {source.as_text(parent)}"
                dangling.add(plan.source_table, pk, column, value, reason)
            problems += dangling.lines()
        return problems

    def describe_dangling(self, connection, plan, rowid, fk_index):
        fk_rows = connection.execute(f'PRAGMA foreign_key_list("{plan.source_table}")').fetchall()
        column = next((source.as_text(r[3]) for r in fk_rows if r[0] == fk_index), "?")
        row = connection.execute(
            f'SELECT {plan.source_pk}, "{column}" FROM "{plan.source_table}" WHERE rowid = ?',
            (rowid,),
        ).fetchone()
        return (row[0], column, row[1]) if row else (rowid, column, None)

    def check_unique_values(self, connection: sqlite3.Connection) -> list[str]:
        problems = []
        for plan in self.plans:
            column_sets = unique_column_sets(plan.model)
            if self.mapping is not None:
                # A Django source's key is unique by its schema; a mapping can make the key
                # of any column or expression.
                column_sets = [(plan.pk,), *column_sets]
            for columns in column_sets:
                expressions = [plan.column(name).quoted for name in columns]
                names = ", ".join(expressions)
                not_null = " AND ".join(f"{expression} IS NOT NULL" for expression in expressions)
                duplicates = connection.execute(
                    f'SELECT {names}, count(*), min({plan.source_pk}) FROM "{plan.source_table}" '
                    f"WHERE {not_null} GROUP BY {names} HAVING count(*) > 1"
                ).fetchall()
                if duplicates:
                    found = ValueProblems()
                    for row in duplicates:
                        value = row[0] if len(columns) == 1 else tuple(row[: len(columns)])
                        found.add(plan.where, row[-1], "+".join(columns), value,
                                  "duplicated, breaking a unique constraint")  # fmt: skip
                    problems += found.lines()
        return problems

    def tables_with_bad_values_in_halves(self) -> set[str]:
        """Every column's checks, inside SQLite: a scan per table that stops at the first bad
        value, a big table's second half of rows in a child process (see row_halves). The
        checks for NUL characters are left to check_text_encoding."""
        halves = {
            plan.table: row_halves(self.sqlite, plan.source_table, self.count_source_rows(plan))
            for plan in self.plans
        }
        second = self.read_in_child(lambda sqlite: self.tables_with_bad_values(sqlite, halves, 1))
        flagged = self.tables_with_bad_values(self.sqlite, halves, 0, self.progress)
        return flagged | second.result()

    def value_problems(self, flagged: set[str]) -> ValueProblems:
        """The full count and a sample of each check, NUL characters included, for the tables
        where a bad value may be."""
        found = ValueProblems()
        for plan in self.plans:
            if plan.table not in flagged:
                continue
            checks = value_checks(plan)
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
                progress.start("checking", plan.table, self.count_source_rows(plan))
            rows = halves[plan.table][half]
            checks = value_checks(plan)
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
                progress.advance(self.count_source_rows(plan))
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

    def count_source_rows(self, plan: TablePlan) -> int:
        """Rows of a source table, counted once: the snapshot does not change."""
        if plan.source_table not in self.source_row_counts:
            query = f'SELECT count(*) FROM "{plan.source_table}"'
            self.source_row_counts[plan.source_table] = self.sqlite.execute(query).fetchone()[0]
        return self.source_row_counts[plan.source_table]

    # -- the copy: one transaction, verified before commit

    def copy_verify_commit(self) -> None:
        with transaction.atomic(using=self.options.database):
            with self.connection.cursor() as cursor:
                cursor.execute("SET CONSTRAINTS ALL DEFERRED")
                cursor.execute("SET LOCAL TimeZone = 'UTC'")
                cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
                # The snapshot's own checksums, in a child from the start of the copy: the copy
                # is a pipeline that leaves a core part-idle, while the index builds and the
                # server's checksums after it keep both cores busy.
                self.source_checksums = self.read_in_child(self.compute_source_checksums)
                self.clear_target(cursor)
                deferred = self.drop_indexes_and_constraints(cursor)
                for plan in self.plans:
                    self.copy_table(cursor, plan)
                self.restore_indexes_and_constraints(cursor, deferred)
                self.reset_sequences()
                self.verify()
                self.seal_snapshot()  # the run's record names it
            self.progress.phase("Committing")

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
            plan.table for plan in self.plans if self.count_source_rows(plan) >= BULK_LOAD_MIN_ROWS
        ]
        if not big:
            return []
        self.progress.phase(f"Dropping indexes, keys and foreign keys of {', '.join(big)}")
        big = [self.qn(table) for table in big]
        run_deferred_checks(cursor)
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
        run_deferred_checks(cursor)
        for statement in statements:
            cursor.execute(statement)

    def clear_target(self, cursor) -> None:
        replaced = [plan for plan in self.plans if plan.replaced]
        if self.options.truncate:
            tables = ", ".join(self.qn(plan.table) for plan in self.plans if not plan.replaced)
            self.progress.phase("Truncating the target tables (--truncate)")
            cursor.execute(f"TRUNCATE {tables}")
        # Permissions first: they refer to content types.
        for plan in sorted(replaced, key=lambda plan: plan.table != "auth_permission"):
            cursor.execute(f"DELETE FROM {self.qn(plan.table)}")

    def copy_table(self, cursor, plan: TablePlan) -> None:
        """COPY one table from the text lines SQLite builds for it."""
        started = time.monotonic()
        total = self.count_source_rows(plan)
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

    def compute_source_checksums(
        self, connection: sqlite3.Connection
    ) -> dict[str, verify.TableChecksum]:
        return {
            plan.table: verify.sqlite_table_checksum(connection, verify.layout_of(plan))
            for plan in self.plans
        }

    def verify(self) -> None:
        """Compare each table's count and checksum, computed independently on both sides."""
        self.progress.phase("Verifying row counts and checksums")
        targets = {
            plan.table: verify.postgresql_table_checksum(self.connection, verify.layout_of(plan))
            for plan in self.plans
        }
        try:
            source_checksums = self.source_checksums.result()
        except sqlite3.DatabaseError as exc:
            raise ImportFailed(
                f"the snapshot could not be read for its checksums ({exc}); rolled back"
            ) from None
        for plan in self.plans:
            result, target = self.results[plan.table], targets[plan.table]
            source_checksum = source_checksums[plan.table]
            result.source_checksum = source_checksum.digest
            result.target_rows = target.rows
            result.target_checksum = target.digest
            source_rows = self.count_source_rows(plan)
            if not result.matches or {source_checksum.rows, result.source_rows} != {source_rows}:
                first = verify.first_difference(
                    self.sqlite, self.connection, verify.layout_of(plan)
                )
                raise ImportFailed(
                    f"verification failed for {plan.table}: {source_checksum.rows} rows in the "
                    f"source, {target.rows} in the target, checksums "
                    f"{'match' if source_checksum.digest == target.digest else 'differ'}; "
                    f"first differing key: {first}; rolled back"
                )

    def qn(self, name: str) -> str:
        return self.connection.ops.quote_name(name)


def run_deferred_checks(cursor) -> None:
    """Run the foreign key checks deferred so far (the rows deleted by clear_target, or
    copied), and defer the next ones again: ALTER TABLE refuses a table with checks pending,
    and the checks would run at commit anyway."""
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    cursor.execute("SET CONSTRAINTS ALL DEFERRED")


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
        connection, plan.source_table, values, rowid, COPY_CHUNK_ROWS, "char(10)"
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


# Escape for COPY's text format, but only scan-and-replace the rare values that need it.
COPY_ESCAPED = (
    "CASE WHEN instr({c}, '\\') + instr({c}, char(9)) + instr({c}, char(10)) "
    "+ instr({c}, char(13)) = 0 THEN {c} ELSE "
    "replace(replace(replace(replace({c}, '\\', '\\\\'), char(9), '\\t'), char(10), '\\n'), "
    "char(13), '\\r') END"
)

# The fast COPY text: SQLite joins values and rows by bytes that preflight keeps out of the
# values, and Python escapes a whole chunk before it turns them into COPY's own.
VALUE_JOINER, NULL_MARK, ROW_JOINER = b"\x1f", b"\x1e", b"\x00"
# What COPY's text format needs escaped in a value, the backslash first.
COPY_IN_ESCAPES = ((b"\\", b"\\\\"), (b"\t", b"\\t"), (b"\n", b"\\n"), (b"\r", b"\\r"))


def copy_line_sql(plan: TablePlan, escaped: bool = False) -> str:
    """SQLite expression of a row's COPY text.

    By default the values unescaped, joined by VALUE_JOINER, NULL as NULL_MARK (copy_text
    escapes and converts a chunk of such rows at once: escaping each text value in SQL was a
    third of the cost of the lines). With `escaped`, the line as COPY reads it: escaped
    values, tab-separated, NULL as \\N.

    One printf builds the line in a single pass, where `a || char(9) || b ...` copies the
    growing line at every step (20% of the copy's time on an 11-column table). Every part is
    text and never NULL (preflight rejects NUL characters, where printf would stop), so both
    give the same line; printf takes at most PRINTF_MAX_VALUES parts, so very wide tables
    concatenate.
    """
    parts = []
    for column in plan.columns:
        value = column.copy_sql()
        if escaped:
            parts.append(f"ifnull({COPY_ESCAPED.format(c=value)}, '{NULL}')")
        elif column.nullable:
            parts.append(f"ifnull({value}, char({NULL_MARK[0]}))")
        else:
            parts.append(value)
    separator = 9 if escaped else VALUE_JOINER[0]
    if len(parts) >= PRINTF_MAX_VALUES:
        return f" || char({separator}) || ".join(parts)
    return f"printf('{chr(separator).join(['%s'] * len(parts))}', {', '.join(parts)})"


def copy_text(joined: bytes, rows: int, nulls: int, width: int) -> bytes | None:
    """COPY text of `rows` rows of copy_line_sql's unescaped values, each row ended by
    ROW_JOINER, holding `nulls` NULLs; None when a value holds one of the joining bytes, so
    the rows must be read as escaped lines instead."""
    if (
        joined.count(ROW_JOINER) != rows
        or joined.count(VALUE_JOINER) != rows * (width - 1)
        or joined.count(NULL_MARK) != nulls
    ):
        return None
    for character, escape in COPY_IN_ESCAPES:
        if character in joined:
            joined = joined.replace(character, escape)
    return joined.replace(VALUE_JOINER, b"\t").replace(NULL_MARK, b"\\N").replace(ROW_JOINER, b"\n")


def copy_chunks(connection: sqlite3.Connection, plan: TablePlan) -> Iterator[tuple[bytes, int]]:
    """A table's COPY text, COPY_CHUNK_ROWS lines at a time, each with its number of lines.

    SQLite joins the rows (source.joined_chunks) and Python escapes them (copy_text), unless
    the table has no rowid of its own, or a chunk's values hold the bytes that join them:
    then SQLite writes each escaped line. Their order does not matter to COPY.
    """
    table, width = plan.source_table, len(plan.columns)
    escaped = copy_line_sql(plan, escaped=True)
    rowid = source.rowid_column(connection, table)
    if rowid is None:
        cursor = connection.execute(f'SELECT {escaped} FROM "{table}" NOT INDEXED')
        while rows := cursor.fetchmany(COPY_CHUNK_ROWS):
            yield b"\n".join([row[0] for row in rows]) + b"\n", len(rows)
        return
    nulls = " + ".join(f"({c.quoted} IS NULL)" for c in plan.columns if c.nullable) or "0"
    chunks = source.joined_chunks(
        connection, table, copy_line_sql(plan), rowid, COPY_CHUNK_ROWS, "char(0)", nulls
    )
    for chunk in chunks:
        text = copy_text(chunk.text + ROW_JOINER, chunk.rows, chunk.summed, width)
        if text is None:
            after = "1" if chunk.after is None else f"{rowid} > {chunk.after}"
            lines = connection.execute(
                f'SELECT {escaped} FROM "{table}" WHERE {after} AND {rowid} <= ?',
                (chunk.last,),
            ).fetchall()
            text = b"\n".join([line for (line,) in lines]) + b"\n"
        yield text, chunk.rows


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


def value_checks(plan: TablePlan) -> list[tuple[Column, Check, str]]:
    """(column, check, SQL condition true for a bad value) of every check of a table."""
    return [
        (column, check, condition)
        for column in plan.columns
        for check, condition in column.problem_conditions()
    ]


class ForkedRead:
    """One read of the snapshot in a forked child process with its own connection.

    Not a thread: Debian's SQLite is built without lookaside memory, so every allocation takes
    its global mutex, and two threads reading at once mostly wait for each other (half of a
    1M-row value check each: 2.9 s in two threads, 2.0 s in two processes, 3.9 s in one).
    A fork inherits the importer's plans for free, and multiprocessing flushes stdout and
    stderr before it forks, so no buffered line is written twice. The child only reads the
    snapshot, sends its result through a pipe and leaves with os._exit, so it never uses or
    closes the parent's PostgreSQL connection.
    """

    def __init__(
        self,
        snapshot: source.Snapshot,
        read: Callable[[sqlite3.Connection], Any],
    ):
        context = multiprocessing.get_context("fork")
        self.receiver, sender = context.Pipe(duplex=False)
        self.process = context.Process(
            target=read_and_send,
            args=(snapshot, read, sender, os.getpid()),
            name="sqlite-read",
            daemon=True,
        )
        self.process.start()
        sender.close()
        self.outcome: tuple | None = None

    def result(self) -> Any:
        """The read's result. A failed read raises sqlite3.DatabaseError (the file could not
        be read) or ImportFailed (anything else, or a child that died)."""
        if self.outcome is None:
            try:
                self.outcome = self.receiver.recv()
            except EOFError:
                self.process.join()
                self.outcome = (FAILED, "died", f"exit code {self.process.exitcode}")
            self.process.join()
            self.receiver.close()
        if self.outcome[0] == SUCCEEDED:
            return self.outcome[1]
        _, kind, text = self.outcome
        if kind == "sqlite":
            raise sqlite3.DatabaseError(text)
        what = "ended without an answer" if kind == "died" else "failed"
        raise ChildFailed(
            f"a child process reading the snapshot {what} ({text}); nothing was committed",
            reason=text,
            died=kind == "died",
        )

    def stop(self) -> None:
        """Kill the child if it still runs (the run failed or was interrupted)."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.receiver.close()


def read_and_send(snapshot: source.Snapshot, read, sender, parent_pid: int) -> None:
    """The child's side of ForkedRead: read, then send (SUCCEEDED, result) or (FAILED, kind,
    text), plain data that always pickles."""
    # Ctrl-C reaches the whole process group: the parent handles it and stops its children.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent(parent_pid)
    try:
        connection = source.open_snapshot(snapshot)
        try:
            outcome = (SUCCEEDED, read(connection))
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        outcome = (FAILED, "sqlite", str(exc))
    except Exception as exc:  # noqa: BLE001 - handed to the parent, which reports it
        outcome = (FAILED, "error", f"{type(exc).__name__}: {exc}")
    with suppress(OSError):  # the parent is gone: nobody to tell
        sender.send(outcome)


def die_with_parent(parent_pid: int) -> None:
    """Have Linux kill this child when its parent dies, even by SIGKILL (PR_SET_PDEATHSIG)."""
    with suppress(OSError, AttributeError):  # not Linux: the child ends after its read
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


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


@contextmanager
def signals_raise_interrupted():
    """Turn SIGTERM and Ctrl-C into Interrupted, so the transaction rolls back and the run is
    recorded; yields the list of the signals received."""
    received: list[str] = []

    def interrupt(signum, frame):
        name = signal.Signals(signum).name
        received.append(name)
        raise Interrupted(f"signal {name}")

    try:
        previous = {
            signum: signal.signal(signum, interrupt) for signum in (signal.SIGTERM, signal.SIGINT)
        }
    except ValueError:  # not the main thread
        yield received
        return
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
