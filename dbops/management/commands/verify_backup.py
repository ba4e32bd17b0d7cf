"""`verify_backup [NAME | --latest]`: prove a backup restores, with the rows it should have.

Checks the file's sha256 against its BackupRecord, restores it into a scratch database
(PostgreSQL: a new database created and always dropped; SQLite: a temporary file), compares
each table's row count with the counts recorded at backup time, and stores the result on the
record. Exit 1 on any mismatch or restore error.
"""

from django.core.management.base import BaseCommand, CommandError

from dbops import backups
from dbops.models import BackupRecord


class Command(BaseCommand):
    help = (
        "Restore a recorded backup into a scratch database and compare its sha256 and row "
        "counts with the record. Exit 1 on any mismatch or restore error."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        # One of the two, as argparse enforces: a bad command line exits 2.
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("name", nargs="?", help="The backup's file name.")
        which.add_argument(
            "--latest", action="store_true", help="Verify the newest successful backup."
        )

    def handle(self, *args, name, latest, verbosity, **options):
        record = self.find_record(name)
        try:
            detail = backups.verify(record, notice=self.stderr.write)
        except backups.VerificationFailed as exc:
            raise CommandError(
                f"{record.filename}: verification failed: {exc}", returncode=1
            ) from None
        if verbosity >= 1:
            self.stdout.write(self.style.SUCCESS(f"{record.filename}: {detail}"))

    def find_record(self, name: str | None) -> BackupRecord:
        good = BackupRecord.objects.filter(status=BackupRecord.Status.SUCCEEDED)
        record = good.filter(filename=name).first() if name else good.first()
        if record is None:
            what = f"a successful backup named {name}" if name else "a successful backup"
            raise CommandError(
                f"No record of {what}; 'manage.py dbbackup' makes one, the admin lists them.",
                returncode=1,
            )
        return record
