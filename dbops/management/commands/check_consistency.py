"""`check_consistency`: find where a database disagrees with this code base, or with a SQLite copy.

The checks themselves live in dbops/consistency.py, one function each; this command parses
the options, opens the `--against` file, runs them and prints what they found.

Fit for cron: each problem is a finding with a hint, `-v 0` prints nothing unless something
is wrong, `--json` gives machines the same findings, and the exit code is 0 when clean and 1
with findings. It changes nothing, except that `--fix` sets lagging sequences past the
largest key.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connections

from dbops import consistency, consistency_runs, pooler
from dbops.commands import (
    add_database_argument,
    add_json_argument,
    report_on_stdout,
    write_json_report,
)
from dbops.consistency import Finding, Fixed, SqliteDatabase
from dbops.envinfo import describe_database
from dbops.masking import safe_error
from dbops.pings import PingsMonitor
from dbops.sqlite_import import source


class Command(PingsMonitor, BaseCommand):
    help = (
        "Report where the database disagrees with this code base: unapplied migrations, "
        "tables or columns the models expect but the database lacks, sequences behind the "
        "largest key (PostgreSQL; --fix resets them), foreign keys pointing at missing rows "
        "(SQLite, or PostgreSQL constraints created NOT VALID), and with --against, tables "
        "whose row count or checksum differs from a SQLite database of this project. Each "
        "finding comes with a hint. Exit 0 when clean, 1 with findings or on an error."
    )
    requires_system_checks = []
    ping_setting = "CONSISTENCY_PING_URL"

    def add_arguments(self, parser):
        add_database_argument(parser, "Database alias to check (default: default).")
        add_json_argument(
            parser,
            '"database", "findings": [{"check", "table", "detail", "hint"}, ...], "fixed": '
            '[{"check", "table", "detail"}, ...], "error": null or why no check ran',
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
        parser.add_argument(
            "--exclude",
            action="append",
            default=[],
            metavar="APP_LABEL[.Model]",
            help="Leave an app or a model out of every check (repeatable), as the import "
            "that filled the database did, e.g. --exclude sessions.",
        )

    def handle(self, *args, database, json_report, fix, against, exclude, verbosity, **options):
        self.alias = database
        self.excludes = exclude
        self.verbosity = 0 if report_on_stdout(json_report) else verbosity
        self.against = against.expanduser().resolve() if against else None
        self.record = None  # recorded once the database answers (dbops.consistency_runs)
        try:
            # Behind a transaction pooler: over the direct connection (the run lock, and the
            # repairs, need a session), or refused before anything is checked.
            self.alias = database = pooler.command_alias(database, "check_consistency")
            self.connection = connections[database]
            findings, fixed = self.check(fix)
        except CommandError as exc:
            consistency_runs.finish(self.record, None, [], error=str(exc))
            self.write_json(json_report, [], [], error=str(exc))
            raise
        consistency_runs.finish(self.record, findings, fixed)
        if not report_on_stdout(json_report):
            self.write_lines(findings, fixed)
        self.write_json(json_report, findings, fixed)
        if findings:
            kinds = Counter(finding.check for finding in findings)
            raise CommandError(
                f"{len(findings)} finding(s) in database '{database}': "
                + ", ".join(f"{check} {count}" for check, count in kinds.items()),
                returncode=1,
            )

    def check(self, fix: bool) -> tuple[list[Finding], list[Fixed]]:
        """Run every check, or stop with a CommandError that says why none could run."""
        sqlite = self.open_against() if self.against else None
        if self.verbosity >= 1:
            described = describe_database(self.connection.settings_dict)
            self.stdout.write(f"Checking database '{self.alias}' ({described})")
        try:
            self.connect()
            self.record = consistency_runs.start(self.alias, self.against)
            return consistency.run_checks(
                self.connection,
                fix=fix,
                against=sqlite,
                excludes=self.excludes,
                note=self.detail,
            )
        except consistency.ConsistencyError as exc:
            raise CommandError(str(exc), returncode=1) from None
        except DatabaseError as exc:
            raise CommandError(
                f"check_consistency stopped on a database error ({type(exc).__name__}: "
                f"{safe_error(exc, limit=300)})",
                returncode=1,
            ) from None
        except sqlite3.Error as exc:
            raise CommandError(
                f"--against {self.against}: cannot be read as SQLite ({exc})", returncode=1
            ) from None
        finally:
            if sqlite is not None:
                sqlite.connection.close()

    # ------------------------------------------------------------------ preparation

    def open_against(self) -> SqliteDatabase:
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
        return SqliteDatabase(path, sqlite)

    def connect(self) -> None:
        try:
            self.connection.ensure_connection()
        except Exception as exc:  # noqa: BLE001 - every failure means "unreachable"
            raise CommandError(
                f"database '{self.alias}' is unreachable "
                f"({type(exc).__name__}: {safe_error(exc, limit=300)})",
                returncode=1,
            ) from None

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

    def write_json(self, destination, findings, fixed, error: str | None = None) -> None:
        write_json_report(
            self.stdout,
            destination,
            ok=not findings and error is None,
            database=self.alias,
            findings=[asdict(finding) for finding in findings],
            fixed=[asdict(repair) for repair in fixed],
            error=error,
        )
