"""`import_sqlite PATH`: move a SQLite database of this project into PostgreSQL, all or nothing.

See dbops/sqlite_import/ for the flow. This command parses options, asks before
`--truncate` deletes anything, shows progress, prints the proof, writes the JSON report, and
records every real run as an ImportRun in the target (after the rollback, for a failed one).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from django.contrib.contenttypes.models import ContentType
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, OperationalError, connections
from django.utils import timezone

from dbops import conf, pooler, runs
from dbops.commands import (
    add_database_argument,
    add_json_argument,
    report_on_stdout,
    write_json_report,
)
from dbops.masking import safe_error
from dbops.models import ImportRun
from dbops.sqlite_import import ImportFailed, ImportOptions, Interrupted, SqliteImport, source
from dbops.sqlite_import.report import Progress, summary_lines


class Command(BaseCommand):
    help = (
        "Copy a SQLite database of this project into the configured PostgreSQL database in "
        "one transaction: snapshot, preflight (every problem listed, nothing written), COPY, "
        "sequences, per-table checksums, then commit. Exit 1 on any problem."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path, help="The SQLite database file to import.")
        add_database_argument(parser, "Target database alias (default: default).")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Run the preflight only: list every problem, write nothing.",
        )
        parser.add_argument(
            "--truncate",
            action="store_true",
            help="Delete the rows already in the target tables (in the same transaction).",
        )
        parser.add_argument(
            "--exclude",
            action="append",
            default=[],
            metavar="APP_LABEL[.Model]",
            help="Leave out an app or a model (repeatable), e.g. --exclude sessions.",
        )
        parser.add_argument(
            "--mapping",
            metavar="NAME_OR_FILE",
            help="Import a database of another schema through a mapping: a built-in name "
            "(a key of DBOPS_IMPORT_MAPPINGS) or a TOML file.",
        )
        parser.add_argument(
            "--source-timezone",
            default="UTC",
            metavar="ZONE",
            help="Time zone of naive datetimes in a mapped source (default: UTC).",
        )
        parser.add_argument(
            "--integrity-check",
            choices=(source.QUICK_CHECK, source.FULL_CHECK),
            default=source.QUICK_CHECK,
            help="How the snapshot is checked for damage: 'quick' (default, PRAGMA "
            "quick_check: every page and record, in linear time) or 'full' (PRAGMA "
            "integrity_check: also every index entry against its row, many times slower on "
            "big tables). The copy reads tables, never through an index, and PostgreSQL "
            "enforces its own constraints, so 'quick' is enough for a correct copy.",
        )
        parser.add_argument(
            "--keep-snapshot",
            action="store_true",
            help="With --dry-run, keep the snapshot in DBOPS_BACKUP_DIR/imports/ (a dry run "
            "removes it when it ends; a real import always keeps it).",
        )
        add_json_argument(
            parser,
            '"status", "source", "snapshot", "snapshot_sha256", "database", "seconds", '
            '"tables", "mapping", "skipped_tables", "total_rows", "problems"',
            "Give FILE after PATH, or as --json=FILE.",
        )
        parser.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help="Do not ask for confirmation (needed with --truncate when not on a terminal).",
        )

    def handle(self, *args, path, database, dry_run, truncate, exclude, json_report,
               interactive, verbosity, mapping, source_timezone, integrity_check,
               keep_snapshot, **options):  # fmt: skip
        if report_on_stdout(json_report):
            verbosity = 0
        # Behind a transaction pooler the whole import runs over the direct connection.
        refusal = None
        try:
            database = pooler.session_alias(database, "import_sqlite")
        except pooler.PoolerRefusal as exc:
            refusal = str(exc)
        import_options = ImportOptions(
            source_path=path.expanduser().resolve(),
            database=database,
            dry_run=dry_run,
            truncate=truncate,
            excludes=exclude,
            snapshot_dir=Path(conf.BACKUP_DIR) / "imports",
            mapping=mapping,
            source_timezone=source_timezone,
            integrity_check=integrity_check,
            keep_snapshot=keep_snapshot,
        )
        progress = Progress(self.stdout, verbosity, is_terminal=self.stdout.isatty())
        importer = SqliteImport(import_options, progress)
        if refusal:
            self.write_json(json_report, importer, "failed", 0.0, [refusal])
            raise CommandError(refusal, returncode=1)
        if truncate and not dry_run:
            refusal = self.truncate_refusal(database, interactive)
            if refusal:
                self.write_json(json_report, importer, "failed", 0.0, [refusal])
                raise CommandError(refusal, returncode=1)
        record = None if dry_run else self.start_record(import_options)
        started = time.monotonic()
        try:
            results = importer.run()
        except ImportFailed as exc:
            self.fail(importer, record, json_report, started, exc.summary, exc.problems)
        except (KeyboardInterrupt, Interrupted) as exc:
            reason = f"interrupted ({exc or 'Ctrl-C'}); nothing was committed"
            self.fail(importer, record, json_report, started, reason, [])
        except DatabaseError as exc:
            self.fail(importer, record, json_report, started, database_failure(exc, database), [])
        except Exception as exc:  # noqa: BLE001 - recorded, then shown with --traceback
            reason = (
                f"unexpected error ({type(exc).__name__}: {safe_error(exc, limit=300)}); "
                f"nothing was committed"
            )
            self.fail(importer, record, json_report, started, reason, [])
        seconds = time.monotonic() - started
        if verbosity >= 1:
            for line in summary_lines(results, seconds):
                self.stdout.write(line)
            if importer.skipped:
                why = "not in the mapping" if mapping else "excluded"
                self.stdout.write(f"Skipped ({why}): {', '.join(importer.skipped)}")
        if dry_run:
            message = f"Dry run: preflight passed for {len(results)} tables; nothing was written."
        else:
            message = (
                f"Imported {sum(r.source_rows for r in results):,} rows in {len(results)} tables "
                f"in {seconds:.1f} s; every table verified."
            )
        if verbosity >= 1:
            self.stdout.write(self.style.SUCCESS(message))
        self.finish_record(record, importer, ImportRun.Status.SUCCEEDED, seconds, "")
        # Content type ids may have changed under Django's cache.
        ContentType.objects.clear_cache()
        self.write_json(
            json_report, importer, "dry-run passed" if dry_run else "succeeded", seconds, []
        )

    # -- confirmation

    def truncate_refusal(self, database: str, interactive: bool) -> str | None:
        """Why `--truncate` may not go ahead, or None once confirmed. The question goes to
        stderr: stdout may belong to the JSON report."""
        if not interactive:
            return None
        if not sys.stdin.isatty():
            return (
                "--truncate deletes the rows in the target tables; pass --noinput to confirm "
                "when not running on a terminal."
            )
        self.stderr.write(
            f"This deletes every row of the imported tables in database '{database}' before "
            f"the import (all in one transaction). Type 'yes' to continue: ",
            ending="",
        )
        self.stderr.flush()
        if input().strip().lower() != "yes":
            return "Import cancelled; nothing was changed."
        return None

    # -- failure

    def fail(self, importer, record, json_path, started, reason, problems):
        seconds = time.monotonic() - started
        for problem in problems:
            self.stderr.write(f"  - {problem}")
        error_text = "\n".join([reason, *problems])
        self.finish_record(record, importer, ImportRun.Status.FAILED, seconds, error_text)
        self.write_json(json_path, importer, "failed", seconds, [reason, *problems])
        raise CommandError(f"import_sqlite failed: {reason}", returncode=1)

    # -- the ImportRun record, kept outside the import's transaction

    def start_record(self, options: ImportOptions) -> ImportRun | None:
        runs.mark_abandoned(ImportRun, options.database)  # a dry run writes nothing at all
        try:
            return runs.start_run(
                ImportRun,
                options.database,
                database=options.database,
                source_path=str(options.source_path),
                mapping=options.mapping or "",
                options={
                    "truncate": options.truncate,
                    "exclude": options.excludes,
                    "source_timezone": options.source_timezone,
                    "integrity_check": options.integrity_check,
                },
            )
        except DatabaseError:
            # Unreachable or unmigrated target: preflight reports it; there is nowhere to record.
            connections[options.database].close()
            return None

    def finish_record(self, record, importer, status, seconds, error) -> None:
        if record is None:
            return
        snapshot = importer.snapshot
        record.status = status
        record.finished_at = timezone.now()
        record.duration_seconds = seconds
        record.error = error[:20000]
        record.source_sha256 = snapshot.sha256 if snapshot else ""
        record.snapshot_path = str(snapshot.path) if snapshot else ""
        record.tables = [result.as_dict() for result in importer.results.values()]
        record.total_rows = sum(result.source_rows for result in importer.results.values())
        if not runs.save_outcome(record):
            self.stderr.write(
                f"Could not record the outcome of import run {record.pk}: the database did not "
                f"answer for {runs.RECORD_RETRY_SECONDS:g} s; the run will show as abandoned."
            )

    def write_json(self, json_path, importer, status, seconds, problems) -> None:
        snapshot = importer.snapshot
        write_json_report(
            self.stdout,
            json_path,
            ok=status != "failed",
            status=status,
            source=str(importer.options.source_path),
            snapshot=str(snapshot.path) if snapshot and not snapshot.removed else None,
            snapshot_sha256=snapshot.sha256 if snapshot else None,
            database=importer.options.database,
            seconds=round(seconds, 3),
            tables=[result.as_dict() for result in importer.results.values()],
            mapping=importer.options.mapping,
            skipped_tables=importer.skipped,
            total_rows=sum(result.source_rows for result in importer.results.values()),
            problems=problems,
        )


def database_failure(exc: DatabaseError, alias: str) -> str:
    """One line for a failure of the target database, naming the first error, not the last.

    When the server goes away mid-import, Django's rollback and its reconnect fail too, and
    the error that reaches the command is "connection refused" from that reconnect."""
    first, chained = exc, cause_of(exc)
    while chained is not None:
        if isinstance(chained, DatabaseError):
            first = chained
        chained = cause_of(chained)
    detail = f"{type(first).__name__}: {safe_error(first, limit=300)}"
    if isinstance(first, OperationalError):
        return f"lost the connection to database '{alias}' ({detail}); nothing was committed"
    return f"database error ({detail}); nothing was committed"


def cause_of(exc: BaseException) -> BaseException | None:
    """The exception before this one, as Python's traceback shows the chain."""
    if exc.__cause__ is not None or exc.__suppress_context__:
        return exc.__cause__
    return exc.__context__
