"""The checks of `check_consistency`: where a database disagrees with this code base.

They look for what breaks an application quietly, long after the event that caused it:
migrations not applied; tables or columns dropped outside Django; sequences left behind the
largest key by a bulk load (the next insert fails); foreign keys pointing at missing rows
(SQLite never enforced them; PostgreSQL never checked the rows under a constraint created NOT
VALID); and tables that differ from the SQLite database they were imported from, proven with
the very checksums `import_sqlite` verifies its copy with.

One function per check, each taking the connection and what it needs and returning findings,
as Django's system checks return messages: the command only parses, calls and prints, and a
test or another command can run one check alone. Only the sequence check writes, and only
when asked to fix. `note` callbacks receive what was looked at (the command shows it at -v 2),
so that a clean result can be trusted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.db import OperationalError, models, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from dbops.database import (
    MigrationState,
    SequenceState,
    migration_state,
    not_valid_foreign_keys,
    restart_sequence_past_largest_key,
    sequence_state,
    sqlite_dangling_rows,
)
from dbops.sqlite_import import source, verify
from dbops.sqlite_import.plan import (
    PlanError,
    build_plan,
    is_excluded,
    parse_excludes,
    table_models,
)

# How long --fix waits for a transaction writing to a table whose sequence it repairs.
FIX_LOCK_TIMEOUT_SECONDS = 10

MIGRATIONS = "migrations"
MISSING_TABLE = "missing_table"
MISSING_COLUMN = "missing_column"
SEQUENCE = "sequence"
FOREIGN_KEY = "foreign_key"
AGAINST = "against"

Note = Callable[..., None]  # note(message, label="checked")


def ignore(message: str, label: str = "checked") -> None:
    """The default `note`: nobody is listening."""


class ConsistencyError(Exception):
    """A check could not run at all (not a finding): the command stops with exit code 1."""


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


@dataclass(frozen=True)
class SqliteDatabase:
    """The `--against` file, opened read-only with text read as bytes (as the verifier reads
    it: SQLite holds whatever bytes it was given)."""

    path: Path
    connection: sqlite3.Connection


def run_checks(
    connection: BaseDatabaseWrapper,
    *,
    fix: bool = False,
    against: SqliteDatabase | None = None,
    excludes: list[str] | None = None,
    note: Note = ignore,
) -> tuple[list[Finding], list[Fixed]]:
    """Every check in order, each given what the ones before it learnt: tables of apps still
    waiting for migrations are not expected yet, and a table found incomplete is not
    checked further (its sequence or checksum would only repeat the finding)."""
    try:
        app_labels, model_labels = parse_excludes(excludes or [])
    except PlanError as exc:
        raise ConsistencyError(exc.summary) from None
    state = migration_state(connection)
    findings = check_migrations(connection, state, note)
    expected = [
        model
        for model in expected_models(connection.alias)
        if model._meta.app_label not in state.lagging_apps
        and not is_excluded(model, app_labels, model_labels)
    ]
    schema_findings = check_tables_and_columns(connection, expected, note)
    findings += schema_findings
    incomplete = {finding.table for finding in schema_findings}
    complete = [model for model in expected if model._meta.db_table not in incomplete]
    fixed: list[Fixed] = []
    if connection.vendor == "postgresql":
        sequence_findings, fixed = check_sequences(connection, complete, fix=fix, note=note)
        findings += sequence_findings
        findings += check_postgresql_foreign_keys(connection, note)
    elif connection.vendor == "sqlite":
        note("sequences: not applicable (SQLite's AUTOINCREMENT follows the keys)")
        findings += check_sqlite_foreign_keys(connection, note)
    if against is not None:
        tables = {model._meta.db_table for model in complete}
        findings += compare_with_sqlite(connection, against, tables, excludes or [], note)
    return findings, fixed


def expected_models(alias: str) -> list[type[models.Model]]:
    """Every model whose table this database should have: managed, concrete, routed here.

    Auto-created many-to-many tables are included; dbops' own tables too (unlike import_sqlite,
    which leaves them out of what it copies).
    """
    return [model for model in table_models() if router.allow_migrate_model(alias, model)]


# --------------------------------------------------------------------------- migrations, schema


def check_migrations(
    connection: BaseDatabaseWrapper, state: MigrationState, note: Note = ignore
) -> list[Finding]:
    """Migrations of this code base that the database lacks."""
    if not state.unapplied:
        note(f"migrations: all {state.applied} applied")
        return []
    note(
        "tables and columns of apps with unapplied migrations: "
        + ", ".join(sorted(state.lagging_apps)),
        label="skipped",
    )
    hint = f"Run 'manage.py migrate --database {connection.alias}'."
    return [Finding(MIGRATIONS, None, f"{len(state.unapplied)} unapplied: {state.shown()}", hint)]


def check_tables_and_columns(
    connection: BaseDatabaseWrapper, expected: list[type[models.Model]], note: Note = ignore
) -> list[Finding]:
    """Tables and columns the (fully migrated) models expect but the database lacks."""
    introspection = connection.introspection
    findings = []
    with connection.cursor() as cursor:
        tables = set(introspection.table_names(cursor))
        for model in expected:
            meta = model._meta
            hint = dropped_hint(connection, meta.app_label)
            if meta.db_table not in tables:
                detail = (
                    f"model {meta.label} expects table {meta.db_table}, which the database lacks"
                )
                findings.append(Finding(MISSING_TABLE, meta.db_table, detail, hint))
                continue
            description = introspection.get_table_description(cursor, meta.db_table)
            present = {column.name for column in description}
            missing = [f for f in meta.local_concrete_fields if f.column not in present]
            if missing:
                fields = ", ".join(f"{f.column} ({meta.label}.{f.name})" for f in missing)
                detail = f"table {meta.db_table} lacks column(s) {fields}"
                findings.append(Finding(MISSING_COLUMN, meta.db_table, detail, hint))
    note(f"tables and columns: {len(expected)} tables checked")
    return findings


def dropped_hint(connection: BaseDatabaseWrapper, app_label: str) -> str:
    return (
        f"The migrations of '{app_label}' are all recorded as applied, so it was dropped "
        f"or renamed outside Django: restore it from a backup, or recreate it with the SQL "
        f"of 'manage.py sqlmigrate {app_label} MIGRATION --database {connection.alias}'."
    )


# --------------------------------------------------------------------------- sequences


def check_sequences(
    connection: BaseDatabaseWrapper,
    checked: list[type[models.Model]],
    *,
    fix: bool = False,
    note: Note = ignore,
) -> tuple[list[Finding], list[Fixed]]:
    """Sequences that would hand out a key already taken (PostgreSQL); with `fix`, each is
    restarted past the largest key and returned as fixed instead of found."""
    alias = connection.alias
    findings, fixed = [], []
    tables = {
        model._meta.db_table: model._meta.pk.column
        for model in checked
        if isinstance(model._meta.pk, models.AutoField)
    }
    for table, pk in tables.items():
        state = sequence_state(connection, table, pk)
        if state.sequence is None:
            findings.append(no_sequence_finding(connection, table, pk))
            continue
        if not state.behind:
            continue
        if not fix:
            detail = (
                f"sequence {state.sequence} gives {state.next_value} next, but the largest "
                f"{pk} is {state.largest}: the next insert fails with a duplicate key"
            )
            hint = (
                f"Run 'manage.py check_consistency --fix --database {alias}' to set it past "
                f"the largest key."
            )
            findings.append(Finding(SEQUENCE, table, detail, hint))
            continue
        try:
            state, next_value = fix_sequence(connection, table, pk)
        except OperationalError:  # lock_timeout: a writer held the table
            findings.append(unfixed_sequence_finding(connection, table, state))
            continue
        detail = (
            f"sequence {state.sequence} set past the largest {pk} ({state.largest}); the next "
            f"insert gets {next_value}"
        )
        fixed.append(Fixed(SEQUENCE, table, detail))
    note(f"sequences: {len(tables)} checked")
    return findings, fixed


def fix_sequence(connection: BaseDatabaseWrapper, table: str, pk: str) -> tuple[SequenceState, int]:
    """Restart a lagging sequence, with the table's writes held until commit so that no
    insert takes a key between reading the largest and restarting past it; waits for a
    writer at most FIX_LOCK_TIMEOUT_SECONDS (OperationalError after that)."""
    with transaction.atomic(using=connection.alias):
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = '{FIX_LOCK_TIMEOUT_SECONDS * 1000:.0f}'")
            cursor.execute(f"LOCK TABLE {connection.ops.quote_name(table)} IN EXCLUSIVE MODE")
        state = sequence_state(connection, table, pk)
        next_value = restart_sequence_past_largest_key(connection, state, never_backwards=True)
    return state, next_value


def unfixed_sequence_finding(
    connection: BaseDatabaseWrapper, table: str, state: SequenceState
) -> Finding:
    return Finding(
        SEQUENCE,
        table,
        f"sequence {state.sequence} gives {state.next_value} next, but the largest "
        f"{state.column} is {state.largest}; not fixed: a transaction writing to {table} "
        f"held it for more than {FIX_LOCK_TIMEOUT_SECONDS:g} s",
        f"Run 'manage.py check_consistency --fix --database {connection.alias}' again once it "
        f"has ended (pg_stat_activity shows it).",
    )


def no_sequence_finding(connection: BaseDatabaseWrapper, table: str, pk: str) -> Finding:
    qn = connection.ops.quote_name
    return Finding(
        SEQUENCE,
        table,
        f"primary key {table}.{pk} has no sequence or identity: an insert without an "
        f"explicit {pk} fails",
        f"Give it one again: ALTER TABLE {qn(table)} ALTER COLUMN {qn(pk)} ADD "
        f"GENERATED BY DEFAULT AS IDENTITY; then run 'manage.py check_consistency --fix "
        f"--database {connection.alias}'.",
    )


# --------------------------------------------------------------------------- foreign keys


def check_postgresql_foreign_keys(
    connection: BaseDatabaseWrapper, note: Note = ignore
) -> list[Finding]:
    """Rows under a NOT VALID foreign key that point at missing rows."""
    constraints = not_valid_foreign_keys(connection)
    findings = []
    for dangling in constraints:
        validate = (
            f"ALTER TABLE {dangling.table_sql} VALIDATE CONSTRAINT "
            f"{connection.ops.quote_name(dangling.constraint)}"
        )
        if not dangling.count:
            note(
                f"foreign keys: {dangling.table}.{dangling.constraint} is NOT VALID but every "
                f"row matches; {validate} makes PostgreSQL enforce it for old rows too",
                label="note",
            )
            continue
        detail = (
            f"{dangling.detail} (constraint {dangling.constraint} is NOT VALID: PostgreSQL "
            f"never checked them)"
        )
        hint = f"Repair or delete those rows, then run '{validate}' so that they stay checked."
        findings.append(Finding(FOREIGN_KEY, dangling.table, detail, hint))
    note(f"foreign keys: {len(constraints)} NOT VALID constraint(s) checked")
    return findings


def check_sqlite_foreign_keys(
    connection: BaseDatabaseWrapper, note: Note = ignore
) -> list[Finding]:
    """Rows pointing at missing rows, which SQLite lets any tool write."""
    hint = (
        "Repair or delete those rows (SQLite does not enforce foreign keys for every tool that "
        "writes to it); import_sqlite refuses a database with such rows."
    )
    with connection.cursor() as cursor:
        findings = [
            Finding(FOREIGN_KEY, dangling.table, dangling.detail, hint)
            for dangling in sqlite_dangling_rows(cursor)
        ]
    note("foreign keys: PRAGMA foreign_key_check run")
    return findings


# --------------------------------------------------------------------------- against SQLite


def compare_with_sqlite(
    connection: BaseDatabaseWrapper,
    against: SqliteDatabase,
    tables: set[str],
    excludes: list[str],
    note: Note = ignore,
) -> list[Finding]:
    """Tables of `tables` that import_sqlite copies and whose rows differ from the SQLite file
    (row count, checksum, first differing key), or that the file lacks: proven with the
    importer's own plan and verifier.

    Every call into dbops.sqlite_import for the comparison is in this function and nowhere
    else, so that when the importer's modules move, it is the one place to re-point.
    """
    sqlite, path = against.connection, against.path
    hint = (
        f"Expected once the application has written to the database. Right after "
        f"'manage.py import_sqlite {path}', look at that key on both sides; importing again "
        f"with --truncate replaces the database's rows."
    )
    try:
        plans, _ = build_plan(excludes)
    except PlanError as exc:
        raise ConsistencyError("--against: " + "; ".join([exc.summary, *exc.problems])) from None
    findings, compared = [], 0
    for plan in plans:
        if plan.table not in tables:
            continue  # missing here, or its app not migrated: reported by the other checks
        missing = source.missing_for(sqlite, plan.table, plan.column_names)
        if missing:
            findings.append(Finding(AGAINST, plan.table, f"the SQLite database {missing}", hint))
            continue
        layout = verify.layout_of(plan)
        try:
            theirs = verify.sqlite_table_checksum(sqlite, layout)
        except ValueError as exc:
            detail = f"the SQLite table holds a value the verifier cannot read ({exc})"
            dry_run = f"Run 'manage.py import_sqlite {path} --dry-run' to list every bad value."
            findings.append(Finding(AGAINST, plan.table, detail, dry_run))
            continue
        ours = verify.postgresql_table_checksum(connection, layout)
        compared += 1
        if (theirs.rows, theirs.digest) == (ours.rows, ours.digest):
            continue
        first = verify.first_difference(sqlite, connection, layout)
        detail = (
            f"{theirs.rows} row(s) in {path.name}, {ours.rows} in the database; checksums "
            f"{'match' if theirs.digest == ours.digest else 'differ'}; first differing key: "
            f"{first if first is not None else 'none on a re-read'}"
        )
        findings.append(Finding(AGAINST, plan.table, detail, hint))
    note(f"against {path}: {compared} tables compared")
    return findings
