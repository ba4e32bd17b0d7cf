"""`verify_backup [NAME | --latest] [--remote] [--private-key FILE]`: prove a backup restores,
with the rows it should have and the values they held.

Checks the file's sha256 against its BackupRecord, restores it into a scratch database
(PostgreSQL: a new database created and always dropped; SQLite: a temporary file), compares
each table's row count and checksum with those recorded at backup time (a count alone passes
a changed value; the mismatch names the table), and stores the result on the record. A
record without checksums (SQLite, or a backup from before they were recorded) is compared by
counts only, and its result says so. `--remote` does the same with the off-site copy,
fetched into a private temporary file; an encrypted backup (local or off-site) is decrypted
with `--private-key`, the armored secret key the server does not hold. Exit 1 on any mismatch,
restore or key error.
"""

import tempfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS

from dbops import backups, conf, offsite, pooler
from dbops.models import BackupRecord


class Command(BaseCommand):
    help = (
        "Restore a recorded backup into a scratch database and compare its sha256 and every "
        "table's row count and checksum with the record (counts only for a record without "
        "checksums); --remote verifies the off-site copy; --private-key FILE "
        "decrypts an encrypted backup. Exit 1 on any mismatch, restore or key error."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        # One of the two, as argparse enforces: a bad command line exits 2.
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("name", nargs="?", help="The backup's file name.")
        which.add_argument(
            "--latest", action="store_true", help="Verify the newest successful backup."
        )
        parser.add_argument(
            "--remote",
            action="store_true",
            help="Verify the off-site copy (fetched from the remote storage) instead.",
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

    def handle(self, *args, name, latest, remote, private_key, verbosity, **options):
        # Behind a transaction pooler: refused without a direct connection, before anything.
        pooler.command_alias(DEFAULT_DB_ALIAS, "verify_backup")
        record = self.find_record(name)
        if private_key is not None and not private_key.is_file():
            raise CommandError(f"--private-key: {private_key} is not a file", returncode=1)
        self.passphrase = self.read_passphrase(options["passphrase_file"])
        what = f"{record.filename} (off-site copy)" if remote else record.filename
        try:
            if remote or record.encrypted:
                detail = self.verify_fetched(record, remote=remote, private_key=private_key)
            else:
                detail = backups.verify(record, notice=self.stderr.write)
        except (backups.VerificationFailed, offsite.OffsiteError) as exc:
            raise CommandError(f"{what}: verification failed: {exc}", returncode=1) from None
        if verbosity >= 1:
            self.stdout.write(self.style.SUCCESS(f"{what}: {detail}"))

    def verify_fetched(self, record, *, remote: bool, private_key: Path | None) -> str:
        """Fetch (and decrypt) the backup into a private folder, verify that plain copy."""
        parent = conf.BACKUP_DIR if conf.BACKUP_DIR and Path(conf.BACKUP_DIR).is_dir() else None
        with tempfile.TemporaryDirectory(prefix=".dbops-verify-", dir=parent) as folder:
            plain = Path(folder) / record.filename.removesuffix(".gpg")
            offsite.fetch_backup(
                record, plain, remote=remote, private_key=private_key, passphrase=self.passphrase
            )
            return backups.verify(record, notice=self.stderr.write, source=plain)

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
        good = BackupRecord.objects.filter(status=BackupRecord.Status.SUCCEEDED)
        record = good.filter(filename=name).first() if name else good.first()
        if record is None:
            what = f"a successful backup named {name}" if name else "a successful backup"
            raise CommandError(
                f"No record of {what}; 'manage.py dbbackup' makes one, the admin lists them.",
                returncode=1,
            )
        return record
