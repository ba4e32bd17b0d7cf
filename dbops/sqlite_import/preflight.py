"""Preflight: every problem the import would meet, found before anything is written.

Read-only on both sides. The target must be reachable, PostgreSQL, fully migrated, and empty
(or `--truncate`); the source must be a database of this project at the same migrations, with
every table and column the models expect; then its keys, unique values, text encoding and
every value are checked (value_checks.py). Child processes check integrity, keys and text
encoding, and the values of the second half of every big table's rows, while this process
checks the rest, so preflight uses every core. Every problem is collected and reported at once.
"""

from __future__ import annotations

import sqlite3

from django.db.migrations.recorder import MigrationRecorder

from dbops.database import foreign_keys_into, migration_state, sqlite_dangling_rows
from dbops.sqlite_import import source
from dbops.sqlite_import.mapping import (
    Mapping,
    MappingError,
    builtin_mappings,
    load_mapping,
    looks_like,
)
from dbops.sqlite_import.plan import TablePlan, table_models, unique_column_sets
from dbops.sqlite_import.results import ImportFailed, ImportOptions, NullProgress
from dbops.sqlite_import.value_checks import ValueProblems, ValueScan
from dbops.sqlite_import.workers import Workers

KEY_CHECK_CACHE_KIB = 16 * 1024


class Preflight:
    def __init__(
        self,
        options: ImportOptions,
        plans: list[TablePlan],
        mapping: Mapping | None,
        sqlite: sqlite3.Connection,
        connection,
        rows: source.RowCounts,
        workers: Workers,
        progress: NullProgress,
    ):
        self.options, self.plans, self.mapping = options, plans, mapping
        self.sqlite, self.connection, self.rows = sqlite, connection, rows
        self.workers, self.progress = workers, progress
        self.values = ValueScan(plans, sqlite, rows, workers, progress)
        self.flagged: set[str] = set()

    def run(self, complete: bool) -> None:
        """Raise ImportFailed with every problem found; return when there is none.

        With `complete` False (a real import), the problems PostgreSQL refuses by itself,
        loudly (dangling foreign keys, duplicates against a unique constraint, text that is
        not UTF-8 or holds a NUL), are looked for only when other problems were found, or
        once the load was refused (problems_postgresql_refuses): a run on good data reads the
        snapshot once less. A dry run looks for them every time.
        """
        # Child processes check integrity (and keys and text encoding), and the values of the
        # second half of every big table's rows, while this process checks the rest:
        # preflight uses every core.
        mode = self.options.integrity_check
        self.progress.phase(
            f"Checking the snapshot's integrity ({source.INTEGRITY_PRAGMAS[mode]}, "
            f"in the background)"
        )
        integrity = self.workers.read(lambda sqlite: source.integrity_problems(sqlite, mode))
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
                problems += self.check_excluded_references()
                keys = self.start_key_and_encoding_checks() if complete else None
                self.progress.phase("Checking every value against its target column")
                self.flagged = self.values.tables_with_bad_values_in_halves()
                problems += self.values.value_problems(self.flagged).lines()
                if keys is not None or problems:
                    problems += self.problems_postgresql_refuses(keys)
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

    def start_key_and_encoding_checks(self):
        self.progress.phase(
            "Checking foreign keys, unique values and text encoding (in the background)"
        )
        return self.workers.read(self.check_keys_and_encoding)

    def problems_postgresql_refuses(self, keys=None) -> list[str]:
        """Dangling foreign keys, duplicates, and text PostgreSQL cannot store (with the full
        checks of the tables that may hold a NUL character), every one of them."""
        keys = keys or self.start_key_and_encoding_checks()
        key_problems, may_hold_nul = keys.result()
        more = may_hold_nul - self.flagged  # the flagged tables were counted in full already
        return key_problems + self.values.value_problems(more).lines()

    def check_target(self) -> list[str]:
        self.progress.phase("Checking the target database")
        problems = []
        if self.connection.vendor != "postgresql":
            return [
                f"target database '{self.options.database}' is {self.connection.vendor}; "
                f"import_sqlite writes to PostgreSQL only"
            ]
        try:
            migrations = migration_state(self.connection)
        except Exception as exc:  # noqa: BLE001 - unreachable, or no permission
            return [
                f"target database '{self.options.database}' is unreachable ({type(exc).__name__})"
            ]
        if migrations.unapplied:
            names = ", ".join(f"{app}.{name}" for app, name in migrations.unapplied[:5])
            problems.append(
                f"target database is not fully migrated ({len(migrations.unapplied)} "
                f"unapplied: {names}); run 'manage.py migrate --database "
                f"{self.options.database}' first"
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
        return problems + self.check_references_into_imported_tables()

    def check_references_into_imported_tables(self) -> list[str]:
        """Tables not imported with rows that point into tables the import empties: all of
        them with --truncate, else the content types and permissions it replaces. (An empty
        such table is emptied along with them: see Load.tables_to_truncate.)"""
        imported = {plan.table: plan for plan in self.plans}
        labels = {model._meta.db_table: model._meta.label for model in table_models()}
        problems = []
        for child, parent, constraint in foreign_keys_into(self.connection, list(imported)):
            emptied = self.options.truncate or imported[parent].replaced
            if not emptied or not self.target_has_rows(child):
                continue
            what = f"model {labels[child]}" if child in labels else "a table of no model"
            problems.append(
                f"{child} ({what}, not imported) has rows and refers to {parent}, whose rows "
                f"the import replaces (constraint {constraint}); import it too (no --exclude "
                f"{labels.get(child, child)}), leave {imported[parent].label} out as well "
                f"(--exclude {imported[parent].label}), or empty {child} first"
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
        schema = source.schema(self.sqlite)
        for name in sorted(builtin_mappings()):
            try:
                if looks_like(load_mapping(name), schema):
                    return f" (it looks like the legacy schema: try --mapping {name})"
            except MappingError:
                continue
        return ""

    def check_tables_and_columns(self) -> list[str]:
        problems = []
        for plan in self.plans:
            missing = source.missing_for(self.sqlite, plan.table, plan.column_names)
            if missing:
                problems.append(
                    f"source {missing} (model {plan.label}); leave it out with --exclude "
                    f"{plan.label} if it is not this project's"
                )
        return problems

    def check_keys_and_encoding(self, connection: sqlite3.Connection) -> tuple[list[str], set]:
        """Problems with foreign keys, unique values and text encoding, and the tables that may
        hold a NUL character (see check_text_encoding)."""
        # A foreign key check looks up every row's parent: with SQLite's default 2 MiB page
        # cache, the pages of a parent table of a few MiB were read again and again (a third of
        # the check's time went to read() calls). The cache is a ceiling, not an allocation.
        connection.execute(f"PRAGMA cache_size = -{KEY_CHECK_CACHE_KIB}")
        problems = self.check_foreign_keys(connection) + self.check_unique_values(connection)
        encoding_problems, may_hold_nul = self.values.check_text_encoding(connection)
        return problems + encoding_problems, may_hold_nul

    def check_excluded_references(self) -> list[str]:
        """Foreign keys to a table left out: PostgreSQL would check them against whatever the
        target holds there."""
        problems = []
        imported = {plan.table for plan in self.plans}
        for plan in self.plans:
            for column, target_table, _ in plan.foreign_keys:
                if target_table not in imported:
                    problems.append(
                        f"{plan.table}.{column} refers to {target_table}, which is excluded; "
                        f"exclude {plan.label} too, or import both"
                    )
        return problems

    def check_foreign_keys(self, connection: sqlite3.Connection) -> list[str]:
        tables = [plan.source_table for plan in self.plans]
        dangling = sqlite_dangling_rows(connection.cursor(), "?", tables)
        return [rows.detail for rows in dangling]

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

    def qn(self, name: str) -> str:
        return self.connection.ops.quote_name(name)
