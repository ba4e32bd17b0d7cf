"""`check_consistency`: find where a database disagrees with this code base, or with a SQLite copy.

It looks for what breaks an application quietly, long after the event that caused it:
migrations not applied; tables or columns dropped outside Django; sequences left behind the
largest key by a bulk load (the next insert fails); foreign keys pointing at missing rows
(SQLite never enforced them; PostgreSQL never checked the rows under a constraint created NOT
VALID); and, with `--against`, tables that differ from the SQLite database they were imported
from, proven with the very checksums `import_sqlite` verifies its copy with.

Fit for cron: each problem is a finding with a hint, `-v 0` prints nothing unless something
is wrong, `--json` gives machines the same findings, and the exit code is 0 when clean and 1
with findings. It changes nothing, except that `--fix` sets lagging sequences past the
largest key.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, OperationalError, connections, models, router, transaction
from django.db.migrations.executor import MigrationExecutor

from dbops.commands import UsageErrorExitsOne
from dbops.database import (
    SequenceState,
    restart_sequence_past_largest_key,
    safe_error,
    sequence_state,
)
from dbops.envinfo import describe_database
from dbops.sqlite_import import source, verify
from dbops.sqlite_import.fields import UnsupportedField, shorten
from dbops.sqlite_import.plan import build_plan, table_models

EXAMPLES = 5
# How long --fix waits for a transaction writing to a table whose sequence it repairs.
FIX_LOCK_TIMEOUT_SECONDS = 10

MIGRATIONS = "migrations"
MISSING_TABLE = "missing_table"
MISSING_COLUMN = "missing_column"
SEQUENCE = "sequence"
FOREIGN_KEY = "foreign_key"
AGAINST = "against"

# Foreign keys PostgreSQL has not checked against the rows already there: their columns, the
# referenced columns, and the referencing table's primary key (to name example rows).
NOT_VALID_FOREIGN_KEYS = """
SELECT c.conname, child.relname, c.conrelid::regclass::text,
       parent.relname, c.confrelid::regclass::text,
       ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, n)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
             ORDER BY k.n),
       ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, n)
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum
             ORDER BY k.n),
       ARRAY(SELECT a.attname::text FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indrelid = c.conrelid AND i.indisprimary)
FROM pg_constraint c
JOIN pg_class child ON child.oid = c.conrelid
JOIN pg_class parent ON parent.oid = c.confrelid
WHERE c.contype = 'f' AND NOT c.convalidated AND pg_table_is_visible(c.conrelid)
ORDER BY child.relname, c.conname
"""


@dataclass
class Finding:
    """One thing wrong, and what to do about it."""

    check: str
    table: str | None
    detail: str
    hint: str

    @property
    def subject(self) -> str:
        return f"{self.check} {self.table}" if self.table else self.check


@dataclass
class Fixed:
    """One thing `--fix` repaired."""

    check: str
    table: str
    detail: str


class Command(UsageErrorExitsOne, BaseCommand):
    help = (
        "Report where the database disagrees with this code base: unapplied migrations, "
        "tables or columns the models expect but the database lacks, sequences behind the "
        "largest key (PostgreSQL; --fix resets them), foreign keys pointing at missing rows "
        "(SQLite, or PostgreSQL constraints created NOT VALID), and with --against, tables "
        "whose row count or checksum differs from a SQLite database of this project. Each "
        "finding comes with a hint. Exit 0 when clean, 1 with findings or on an error."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "--database",
            default="default",
            choices=tuple(connections),
            help="Database alias to check (default: default).",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            dest="as_json",
            help='Print {"ok": ..., "findings": [{"check", "table", "detail", "hint"}, ...]} '
            "to stdout instead of lines.",
        )
        parser.add_argument(
            "--fix",
            action="store_true",
            help="Set every sequence that is behind past the largest key, and say so; "
            "exit 0 if that leaves no findings.",
        )
        parser.add_argument(
            "--against",
            type=Path,
            metavar="SQLITE_PATH",
            help="Also compare each table's row count and checksum with this SQLite database "
            "of the project (opened read-only; dbops' own tables are left out), as "
            "import_sqlite verifies an import. The database checked must be PostgreSQL.",
        )

    def handle(self, *args, database, as_json, fix, against, verbosity, **options):
        self.alias = database
        self.connection = connections[database]
        self.verbosity = 0 if as_json else verbosity
        self.against = against.expanduser().resolve() if against else None
        sqlite = self.open_against() if self.against else None
        if self.verbosity >= 1:
            described = describe_database(self.connection.settings_dict)
            self.stdout.write(f"Checking database '{database}' ({described})")
        try:
            self.connect()
            findings, fixed = self.run_checks(fix, sqlite)
        except DatabaseError as exc:
            raise CommandError(
                f"check_consistency stopped on a database error ({type(exc).__name__}: "
                f"{safe_error(exc, self.alias, 300)})",
                returncode=1,
            ) from None
        except sqlite3.Error as exc:
            raise CommandError(
                f"--against {self.against}: cannot be read as SQLite ({exc})", returncode=1
            ) from None
        finally:
            if sqlite is not None:
                sqlite.close()
        if as_json:
            self.write_json(findings, fixed)
        else:
            self.write_lines(findings, fixed)
        if findings:
            kinds = Counter(finding.check for finding in findings)
            raise CommandError(
                f"{len(findings)} finding(s) in database '{database}': "
                + ", ".join(f"{check} {count}" for check, count in kinds.items()),
                returncode=1,
            )

    # ------------------------------------------------------------------ preparation

    def open_against(self) -> sqlite3.Connection:
        """Open the `--against` file read-only, or stop with a clear error before any check."""
        path = self.against
        if self.connection.vendor != "postgresql":
            raise CommandError(
                f"--against compares a PostgreSQL database with SQLite; database "
                f"'{self.alias}' is {self.connection.vendor}",
                returncode=1,
            )
        try:
            source.check_source_file(path)
            sqlite = source.open_read_only(path)
        except source.SourceError as exc:
            raise CommandError(f"--against {exc}", returncode=1) from None
        except sqlite3.Error as exc:
            raise CommandError(
                f"--against {path}: cannot be opened read-only ({exc})", returncode=1
            ) from None
        # The verifier reads text as bytes (SQLite holds whatever bytes it was given).
        sqlite.text_factory = bytes
        try:
            applied = source.applied_migrations(sqlite)
        except sqlite3.Error as exc:
            sqlite.close()
            raise CommandError(
                f"--against {path}: cannot be read as SQLite ({exc})", returncode=1
            ) from None
        if applied is None:
            sqlite.close()
            raise CommandError(
                f"--against {path}: not a database of this project (it has no "
                f"django_migrations table)",
                returncode=1,
            )
        return sqlite

    def connect(self) -> None:
        try:
            self.connection.ensure_connection()
        except Exception as exc:  # noqa: BLE001 - every failure means "unreachable"
            raise CommandError(
                f"database '{self.alias}' is unreachable "
                f"({type(exc).__name__}: {safe_error(exc, self.alias, 300)})",
                returncode=1,
            ) from None

    # ------------------------------------------------------------------ the checks

    def run_checks(self, fix: bool, sqlite: sqlite3.Connection | None):
        findings = self.check_migrations()
        expected = [
            model
            for model in expected_models(self.alias)
            if model._meta.app_label not in self.lagging_apps
        ]
        schema_findings = self.check_tables_and_columns(expected)
        findings += schema_findings
        incomplete = {finding.table for finding in schema_findings}
        complete = [model for model in expected if model._meta.db_table not in incomplete]
        fixed: list[Fixed] = []
        if self.connection.vendor == "postgresql":
            sequence_findings, fixed = self.check_sequences(complete, fix)
            findings += sequence_findings
            findings += self.check_postgresql_foreign_keys()
        elif self.connection.vendor == "sqlite":
            self.detail("sequences: not applicable (SQLite's AUTOINCREMENT follows the keys)")
            findings += self.check_sqlite_foreign_keys()
        if sqlite is not None:
            findings += self.check_against(sqlite, {model._meta.db_table for model in complete})
        return findings, fixed

    def check_migrations(self) -> list[Finding]:
        executor = MigrationExecutor(self.connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        self.lagging_apps = {migration.app_label for migration, _ in plan}
        if not plan:
            self.detail(f"migrations: all {len(executor.loader.applied_migrations)} applied")
            return []
        names = ", ".join(f"{m.app_label}.{m.name}" for m, _ in plan[:5])
        more = f" and {len(plan) - 5} more" if len(plan) > 5 else ""
        self.detail(
            "tables and columns of apps with unapplied migrations: "
            + ", ".join(sorted(self.lagging_apps)),
            label="skipped",
        )
        return [
            Finding(
                MIGRATIONS,
                None,
                f"{len(plan)} unapplied: {names}{more}",
                f"Run 'manage.py migrate --database {self.alias}'.",
            )
        ]

    def check_tables_and_columns(self, expected: list[type[models.Model]]) -> list[Finding]:
        """Tables and columns the (fully migrated) models expect but the database lacks."""
        introspection = self.connection.introspection
        findings = []
        with self.connection.cursor() as cursor:
            tables = set(introspection.table_names(cursor))
            for model in expected:
                meta = model._meta
                if meta.db_table not in tables:
                    findings.append(
                        Finding(
                            MISSING_TABLE,
                            meta.db_table,
                            f"model {meta.label} expects table {meta.db_table}, which the "
                            f"database lacks",
                            self.dropped_hint(meta.app_label),
                        )
                    )
                    continue
                description = introspection.get_table_description(cursor, meta.db_table)
                present = {column.name for column in description}
                missing = [f for f in meta.local_concrete_fields if f.column not in present]
                if missing:
                    fields = ", ".join(f"{f.column} ({meta.label}.{f.name})" for f in missing)
                    findings.append(
                        Finding(
                            MISSING_COLUMN,
                            meta.db_table,
                            f"table {meta.db_table} lacks column(s) {fields}",
                            self.dropped_hint(meta.app_label),
                        )
                    )
        self.detail(f"tables and columns: {len(expected)} tables checked")
        return findings

    def dropped_hint(self, app_label: str) -> str:
        return (
            f"The migrations of '{app_label}' are all recorded as applied, so it was dropped "
            f"or renamed outside Django: restore it from a backup, or recreate it with the SQL "
            f"of 'manage.py sqlmigrate {app_label} MIGRATION --database {self.alias}'."
        )

    def check_sequences(
        self, checked: list[type[models.Model]], fix: bool
    ) -> tuple[list[Finding], list[Fixed]]:
        """Sequences that would hand out a key already taken (PostgreSQL), fixed with `--fix`."""
        findings, fixed = [], []
        tables = {
            model._meta.db_table: model._meta.pk.column
            for model in checked
            if isinstance(model._meta.pk, models.AutoField)
        }
        for table, pk in tables.items():
            state = sequence_state(self.connection, table, pk)
            if state.sequence is None:
                findings.append(self.no_sequence_finding(table, pk))
                continue
            if not state.behind:
                continue
            if fix:
                try:
                    state, next_value = self.fix_sequence(table, pk)
                except OperationalError:  # lock_timeout: a writer held the table
                    findings.append(self.unfixed_sequence_finding(table, state))
                    continue
                fixed.append(
                    Fixed(
                        SEQUENCE,
                        table,
                        f"sequence {state.sequence} set past the largest {pk} "
                        f"({state.largest}); the next insert gets {next_value}",
                    )
                )
                continue
            findings.append(
                Finding(
                    SEQUENCE,
                    table,
                    f"sequence {state.sequence} gives {state.next_value} next, but the largest "
                    f"{pk} is {state.largest}: the next insert fails with a duplicate key",
                    f"Run 'manage.py check_consistency --fix --database {self.alias}' to "
                    f"set it past the largest key.",
                )
            )
        self.detail(f"sequences: {len(tables)} checked")
        return findings, fixed

    def fix_sequence(self, table: str, pk: str) -> tuple[SequenceState, int]:
        """Restart a lagging sequence, with the table's writes held until commit so that no
        insert takes a key between reading the largest and restarting past it; waits for a
        writer at most FIX_LOCK_TIMEOUT_SECONDS (OperationalError after that)."""
        with transaction.atomic(using=self.alias):
            with self.connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = '{FIX_LOCK_TIMEOUT_SECONDS * 1000:.0f}'")
                cursor.execute(f"LOCK TABLE {self.qn(table)} IN EXCLUSIVE MODE")
            state = sequence_state(self.connection, table, pk)
            next_value = restart_sequence_past_largest_key(
                self.connection, state, never_backwards=True
            )
        return state, next_value

    def unfixed_sequence_finding(self, table: str, state: SequenceState) -> Finding:
        return Finding(
            SEQUENCE,
            table,
            f"sequence {state.sequence} gives {state.next_value} next, but the largest "
            f"{state.column} is {state.largest}; not fixed: a transaction writing to {table} "
            f"held it for more than {FIX_LOCK_TIMEOUT_SECONDS:g} s",
            f"Run 'manage.py check_consistency --fix --database {self.alias}' again once it "
            f"has ended (pg_stat_activity shows it).",
        )

    def no_sequence_finding(self, table: str, pk: str) -> Finding:
        return Finding(
            SEQUENCE,
            table,
            f"primary key {table}.{pk} has no sequence or identity: an insert without an "
            f"explicit {pk} fails",
            f"Give it one again: ALTER TABLE {self.qn(table)} ALTER COLUMN {self.qn(pk)} ADD "
            f"GENERATED BY DEFAULT AS IDENTITY; then run 'manage.py check_consistency --fix "
            f"--database {self.alias}'.",
        )

    def check_postgresql_foreign_keys(self) -> list[Finding]:
        """Rows under a NOT VALID foreign key that point at missing rows (one anti-join each)."""
        findings = []
        with self.connection.cursor() as cursor:
            cursor.execute(NOT_VALID_FOREIGN_KEYS)
            constraints = cursor.fetchall()
            for name, child, child_sql, parent, parent_sql, columns, refs, pk in constraints:
                key = f"child.{self.qn(pk[0])}" if len(pk) == 1 else "child.ctid::text"
                values = ", ".join(f"child.{self.qn(c)}" for c in columns)
                not_null = " AND ".join(f"child.{self.qn(c)} IS NOT NULL" for c in columns)
                match = " AND ".join(
                    f"parent.{self.qn(r)} = child.{self.qn(c)}"
                    for c, r in zip(columns, refs, strict=True)
                )
                # count(*) OVER () counts every dangling row before LIMIT keeps a few examples.
                cursor.execute(
                    f"SELECT count(*) OVER (), {key}, {values} FROM {child_sql} AS child "
                    f"WHERE {not_null} AND NOT EXISTS "
                    f"(SELECT 1 FROM {parent_sql} AS parent WHERE {match}) "
                    f"ORDER BY 2 LIMIT {EXAMPLES}"
                )
                rows = cursor.fetchall()
                if not rows:
                    self.detail(
                        f"foreign keys: {child}.{name} is NOT VALID but every row matches; "
                        f"ALTER TABLE {child_sql} VALIDATE CONSTRAINT {self.qn(name)} makes "
                        f"PostgreSQL enforce it for old rows too",
                        label="note",
                    )
                    continue
                examples = [(row[1], dict(zip(columns, row[2:], strict=True))) for row in rows]
                findings.append(
                    Finding(
                        FOREIGN_KEY,
                        child,
                        dangling_detail(child, columns, parent, rows[0][0], examples)
                        + f" (constraint {name} is NOT VALID: PostgreSQL never checked them)",
                        f"Repair or delete those rows, then run 'ALTER TABLE {child_sql} "
                        f"VALIDATE CONSTRAINT {self.qn(name)}' so that they stay checked.",
                    )
                )
        self.detail(f"foreign keys: {len(constraints)} NOT VALID constraint(s) checked")
        return findings

    def check_sqlite_foreign_keys(self) -> list[Finding]:
        """Rows pointing at missing rows, which SQLite lets any tool write (foreign_key_check)."""
        findings = []
        with self.connection.cursor() as cursor:
            cursor.execute("PRAGMA foreign_key_check")
            dangling: dict[tuple[str, int], tuple[str, list]] = {}
            for table, rowid, parent, fk_id in cursor.fetchall():
                dangling.setdefault((table, fk_id), (parent, []))[1].append(rowid)
            for (table, fk_id), (parent, rowids) in dangling.items():
                cursor.execute(f"PRAGMA foreign_key_list({self.qn(table)})")
                columns = [row[3] for row in cursor.fetchall() if row[0] == fk_id]
                cursor.execute(f"PRAGMA table_info({self.qn(table)})")
                pk = next((row[1] for row in cursor.fetchall() if row[5] == 1), "rowid")
                examples = []
                for rowid in [r for r in rowids if r is not None][:EXAMPLES]:
                    cursor.execute(
                        f"SELECT {self.qn(pk)}, {', '.join(self.qn(c) for c in columns)} "
                        f"FROM {self.qn(table)} WHERE rowid = %s",
                        [rowid],
                    )
                    row = cursor.fetchone()
                    examples.append((row[0], dict(zip(columns, row[1:], strict=True))))
                findings.append(
                    Finding(
                        FOREIGN_KEY,
                        table,
                        dangling_detail(table, columns, parent, len(rowids), examples),
                        "Repair or delete those rows (SQLite does not enforce foreign keys for "
                        "every tool that writes to it); import_sqlite refuses a database "
                        "with such rows.",
                    )
                )
        self.detail("foreign keys: PRAGMA foreign_key_check run")
        return findings

    def check_against(self, sqlite: sqlite3.Connection, present: set[str]) -> list[Finding]:
        """Row counts and checksums of every imported table, compared with the SQLite file."""
        try:
            plans, _ = build_plan([])
        except UnsupportedField as exc:
            raise CommandError(f"--against: {exc}", returncode=1) from None
        source_tables = source.table_names(sqlite)
        findings, compared = [], 0
        for plan in plans:
            if plan.table not in present:
                continue  # missing here, or its app not migrated: reported above
            if plan.table not in source_tables:
                findings.append(self.against_finding(plan.table, "the SQLite database lacks it"))
                continue
            source_columns = set(source.table_columns(sqlite, plan.table))
            lacking = [name for name in plan.column_names if name not in source_columns]
            if lacking:
                findings.append(
                    self.against_finding(
                        plan.table, f"the SQLite table lacks column(s) {', '.join(lacking)}"
                    )
                )
                continue
            try:
                theirs = verify.sqlite_table_checksum(sqlite, verify.layout_of(plan))
            except ValueError as exc:
                findings.append(
                    self.against_finding(
                        plan.table,
                        f"the SQLite table holds a value the verifier cannot read ({exc})",
                        f"Run 'manage.py import_sqlite {self.against} --dry-run' to list "
                        f"every bad value.",
                    )
                )
                continue
            ours = verify.postgresql_table_checksum(self.connection, verify.layout_of(plan))
            compared += 1
            if (theirs.rows, theirs.digest) == (ours.rows, ours.digest):
                continue
            first = verify.first_difference(sqlite, self.connection, verify.layout_of(plan))
            findings.append(
                self.against_finding(
                    plan.table,
                    f"{theirs.rows} row(s) in {self.against.name}, {ours.rows} in the database; "
                    f"checksums {'match' if theirs.digest == ours.digest else 'differ'}; "
                    f"first differing key: {first if first is not None else 'none on a re-read'}",
                )
            )
        self.detail(f"against {self.against}: {compared} tables compared")
        return findings

    def against_finding(self, table: str, detail: str, hint: str = "") -> Finding:
        return Finding(
            AGAINST,
            table,
            detail,
            hint
            or (
                f"Expected once the application has written to the database. Right after "
                f"'manage.py import_sqlite {self.against}', look at that key on both sides; "
                f"importing again with --truncate replaces the database's rows."
            ),
        )

    def qn(self, name: str) -> str:
        return self.connection.ops.quote_name(name)

    # ------------------------------------------------------------------ output

    def detail(self, message: str, label: str = "checked") -> None:
        """A line for -v 2: what was looked at, so a clean result can be trusted."""
        if self.verbosity >= 2:
            self.stdout.write(f"  {label:<8} {message}")

    def write_lines(self, findings: list[Finding], fixed: list[Fixed]) -> None:
        for finding in findings:
            label = self.style.ERROR(f"{'finding':<8}")
            self.stdout.write(f"  {label} {finding.subject}: {finding.detail}")
            self.stdout.write(f"           hint: {finding.hint}")
        if self.verbosity < 1:
            return
        for repair in fixed:
            label = self.style.SUCCESS(f"{'fixed':<8}")
            self.stdout.write(f"  {label} {repair.check} {repair.table}: {repair.detail}")
        repaired = f"; fixed {len(fixed)}" if fixed else ""
        if findings:
            self.stdout.write(f"check_consistency: {len(findings)} finding(s){repaired}")
        else:
            self.stdout.write(self.style.SUCCESS(f"check_consistency: no findings{repaired}"))

    def write_json(self, findings: list[Finding], fixed: list[Fixed]) -> None:
        report = {
            "ok": not findings,
            "database": self.alias,
            "findings": [asdict(finding) for finding in findings],
            "fixed": [asdict(repair) for repair in fixed],
        }
        self.stdout.write(json.dumps(report, indent=2))


def expected_models(alias: str) -> list[type[models.Model]]:
    """Every model whose table this database should have: managed, concrete, routed here.

    Auto-created many-to-many tables are included; dbops' own tables too (unlike import_sqlite,
    which leaves them out of what it copies).
    """
    return [model for model in table_models() if router.allow_migrate_model(alias, model)]


def dangling_detail(table, columns, parent, count, examples) -> str:
    """'T.col: N row(s) point at missing rows of P: pk 2: col=999; ... (and M more)'."""
    shown = "; ".join(
        f"pk {pk}: " + ", ".join(f"{column}={shorten(value)}" for column, value in values.items())
        for pk, values in examples
    )
    more = f" (and {count - len(examples)} more)" if count > len(examples) else ""
    return (
        f"{table}.{'+'.join(columns)}: {count} row(s) point at missing rows of {parent}: "
        f"{shown}{more}"
    )
