"""`restore_backup NAME|--latest [--from-remote] [--private-key FILE] [--swap]` and
`restore_backup --rollback [DATABASE]`.

Restores a recorded backup into a new database beside the live one and checks it (dbops.
restore); with `--swap`, puts it into service with the live database kept aside, and
`--rollback` puts the database set aside back. Every step is recorded as a RestoreRun
(admin: Restore runs). Exit 0 done; 1 refused or failed, with the live database as it was;
2 a bad command line.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connections

from dbops import pooler, restore
from dbops.commands import add_database_argument
from dbops.masking import safe_error
from dbops.models import BackupRecord, RestoreRun


class Command(BaseCommand):
    help = (
        "Restore a recorded backup into a new database beside the live one and check it "
        "(sha256, migrations, row counts, check_consistency); --swap then renames the live "
        "database aside and the restored one into its place; --rollback puts the database "
        "set aside back. Exit 1 on any failure, the live database untouched."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("name", nargs="?", help="The backup file name (admin: Backup records).")
        which.add_argument(
            "--latest", action="store_true", help="Restore the newest successful backup."
        )
        which.add_argument(
            "--rollback",
            nargs="?",
            const="",
            metavar="DATABASE",
            help="Put back the database the newest swap set aside (or DATABASE, one set aside "
            "by a swap), setting the live one aside in turn.",
        )
        parser.add_argument(
            "--swap",
            action="store_true",
            help="Once the checks pass, rename the live database aside and the restored one "
            "into its place.",
        )
        parser.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help="Swap (or roll back) without asking.",
        )
        parser.add_argument(
            "--terminate-sessions",
            action="store_true",
            help="End the other sessions on the live database before the swap (else the swap "
            "is refused while there are any).",
        )
        parser.add_argument(
            "--from-remote",
            action="store_true",
            help='Restore the off-site copy (STORAGES["dbbackup_remote"]), fetched and checked '
            "against the record, instead of the local file.",
        )
        parser.add_argument(
            "--private-key",
            type=Path,
            metavar="FILE",
            help="Armored GPG private key file that decrypts an encrypted backup "
            "(imported into a throwaway keyring, removed afterwards).",
        )
        parser.add_argument(
            "--passphrase-file",
            type=Path,
            metavar="FILE",
            help="A file whose first line is the private key's passphrase.",
        )
        parser.add_argument(
            "--keep-restored",
            action="store_true",
            help="Keep the restored database when a check (or the swap) fails, to look into it.",
        )
        add_database_argument(parser, "The live database's alias (default: default).")

    def create_parser(self, prog_name, subcommand, **kwargs):
        self.parser = super().create_parser(prog_name, subcommand, **kwargs)
        return self.parser

    def handle(self, *args, name, latest, rollback, swap, interactive, database, **options):
        if swap and rollback is not None:
            self.parser.error("--swap restores a backup; --rollback swaps by itself")
        from_remote, private_key = options["from_remote"], options["private_key"]
        passphrase_file = options["passphrase_file"]
        if rollback is not None and (from_remote or private_key or passphrase_file):
            self.parser.error(
                "--from-remote, --private-key and --passphrase-file restore a backup, "
                "not --rollback"
            )
        if private_key is not None and not private_key.is_file():
            raise CommandError(f"--private-key: {private_key} is not a file", returncode=1)
        # Behind a transaction pooler, everything (pg_restore, locks, renames) goes direct.
        database = pooler.command_alias(database, "restore_backup")
        self.alias = database
        self.verbosity = options["verbosity"]
        self.from_remote = options["from_remote"]
        connection = connections[database]
        if connection.vendor != "postgresql":
            raise CommandError(
                f"restore_backup works on PostgreSQL; database '{database}' is {connection.vendor}",
                returncode=1,
            )
        moves = swap or rollback is not None
        if moves and interactive and not sys.stdin.isatty():
            raise CommandError(
                "restore_backup: confirming a swap or rollback needs a terminal; pass --noinput "
                "to go ahead without asking (nothing was done)",
                returncode=1,
            )
        plan = restore.Plan(
            alias=database,
            swap=swap,
            terminate_sessions=options["terminate_sessions"],
            keep_restored=options["keep_restored"],
            from_remote=from_remote,
            private_key=private_key,
            passphrase=self.read_passphrase(passphrase_file),
            confirm=self.confirm if interactive else None,
            notice=self.stderr.write,
            report=self.report_step,
        )
        self.reopen_live_database()
        try:
            if rollback is not None:
                self.roll_back(plan, rollback or None)
            else:
                self.restore(plan, self.find_record(name))
        finally:
            connections[database].close()

    def reopen_live_database(self) -> None:
        try:
            restore.reopen_live_database(self.alias, self.stderr.write)
        except restore.RestoreFailed as exc:
            raise CommandError(f"restore_backup refused: {exc}", returncode=1) from None
        except DatabaseError as exc:
            raise CommandError(
                f"restore_backup: the server of database '{self.alias}' is unreachable, or "
                f"its '{restore.MAINTENANCE_DATABASE}' database is ({safe_error(exc)})",
                returncode=1,
            ) from None

    def read_passphrase(self, path: Path | None) -> str | None:
        if path is None:
            return None
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(
                f"--passphrase-file: {path} cannot be read ({type(exc).__name__})", returncode=1
            ) from None
        return lines[0] if lines else ""

    def find_record(self, name: str | None) -> BackupRecord:
        try:
            good = BackupRecord.objects.using(self.alias).filter(
                status=BackupRecord.Status.SUCCEEDED
            )
            if self.from_remote:
                good = good.filter(
                    remote_copy=BackupRecord.RemoteCopy.COPIED, remote_deleted_at__isnull=True
                )
            else:
                good = good.filter(deleted_at__isnull=True)
            record = good.filter(filename=name).first() if name else good.first()
        except DatabaseError as exc:
            raise CommandError(
                f"restore_backup: database '{self.alias}' is unreachable ({safe_error(exc)})",
                returncode=1,
            ) from None
        if record is None:
            what = f"a successful backup named {name}" if name else "a successful backup"
            kept = "with an off-site copy" if self.from_remote else "that retention kept"
            raise CommandError(
                f"No record of {what} {kept}, in database '{self.alias}'; "
                f"'manage.py dbbackup' makes one, the admin's Backup records list them.",
                returncode=1,
            )
        return record

    def restore(self, plan: restore.Plan, record: BackupRecord) -> None:
        action = RestoreRun.Action.SWAP if plan.swap else RestoreRun.Action.RESTORE
        run, started = self.start(action, record, plan.from_remote), time.monotonic()
        if self.verbosity >= 1:
            self.stdout.write(f"Restoring {record.filename} (restore run {run.pk})")
        self.finish(run, started, lambda runner: runner.restore(record), plan)
        if self.verbosity >= 1:
            if plan.swap:
                self.stdout.write(
                    self.style.SUCCESS(
                        f"{connections[self.alias].settings_dict['NAME']} now holds "
                        f"{record.filename}; the database it replaced is kept as "
                        f"{run.previous_database} (restore_backup --rollback puts it back)"
                    )
                )
            else:
                self.stdout.write(
                    self.style.SUCCESS(
                        f"{record.filename} restored into {run.restored_database} and checked; "
                        f"the live database is unchanged (--swap puts a restore into service)"
                    )
                )

    def roll_back(self, plan: restore.Plan, name: str | None) -> None:
        run, started = self.start(RestoreRun.Action.ROLLBACK), time.monotonic()
        self.finish(run, started, lambda runner: runner.rollback(name), plan)
        if self.verbosity >= 1:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Rolled back: {run.restored_database} is live again; the database it "
                    f"replaced is kept as {run.previous_database}"
                )
            )

    def start(
        self, action: str, record: BackupRecord | None = None, from_remote: bool = False
    ) -> RestoreRun:
        try:
            return restore.start(self.alias, action, record, from_remote)
        except restore.RestoreFailed as exc:
            raise CommandError(f"restore_backup refused: {exc}", returncode=1) from None
        except DatabaseError as exc:
            raise CommandError(
                f"restore_backup: database '{self.alias}' is unreachable ({safe_error(exc)})",
                returncode=1,
            ) from None

    def finish(self, run: RestoreRun, started: float, work, plan: restore.Plan) -> None:
        """Run the work, record its outcome, and fail with the reason if it failed."""
        error = ""
        try:
            work(restore.Runner(run, plan))
        except restore.RestoreFailed as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded
            error = f"unexpected error: {type(exc).__name__}: {safe_error(exc)}"
        if not restore.finish(run, started, error):
            self.stderr.write(
                f"Could not record the outcome of restore run {run.pk}: the database did not "
                f"answer; the run will show as abandoned."
            )
        if error:
            raise CommandError(f"restore_backup failed at {error}", returncode=1)

    def report_step(self, step: dict) -> None:
        if self.verbosity >= 1:
            style = self.style.SUCCESS if step["outcome"] == restore.PASSED else self.style.ERROR
            self.stdout.write(
                f"  {style(step['outcome']):<8} {step['name']}: {step['detail']} "
                f"({step['seconds']:.1f} s)"
            )

    def confirm(self, question: str) -> bool:
        answer = input(f"{question}\nType 'yes' to continue, or 'no' to cancel: ")
        return answer.strip().lower() == "yes"
