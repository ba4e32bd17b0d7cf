"""`dbbackup`, as django-dbbackup does it, with every run recorded (run it from cron).

Overrides django-dbbackup's command (dbops comes before dbbackup in INSTALLED_APPS) because
dbbackup has no failure signal: a failed run must leave a failed BackupRecord, one line on
stderr for cron's mail, exit code 1, and older backups untouched. Backups are always gzipped;
each is read back before it counts as a success (dbops.backup_readback). `--clean` applies
dbops' retention (dbops.retention: daily, weekly and monthly tiers, a floor, the newest
verified and every pinned backup, local and remote alike) instead of dbbackup's count of
matching file names, and `--clean --dry-run` only lists it; `--verify` restores the new
backup into a scratch database and compares every table's count and checksum. Files are
written whole or not at all (dbops.backup_files).

`--encrypt` (or DBOPS_BACKUP_ENCRYPT) stores the backup encrypted to the public key of
DBOPS_BACKUP_GPG_PUBLIC_KEY (dbops.encryption). Its plain dump is read back before it is
encrypted, and `--verify` verifies a private plain copy that goes when the command ends. With
`STORAGES["dbbackup_remote"]` set, every backup is also copied off-site and read back
(dbops.offsite); a failed copy leaves a good local backup, recorded as not off-site, and exit
code 1.

`--from-replica` runs pg_dump, and the counts and checksums in its snapshot, on the standby
DBOPS_REPLICA_DATABASE (a hot standby exports snapshots as a primary does), so the nightly
dump does not load the primary; the record is kept in the database itself and names the
standby (`dumped_from`). A standby that is unreachable, not in recovery, not receiving WAL or
replaying more than DBOPS_REPLICA_BACKUP_MAX_LAG_SECONDS behind is refused before anything is
dumped or recorded: its dump would be older than the backup's time says.
"""

import contextlib
import shutil
import time
from pathlib import Path

from dbbackup.management.commands.dbbackup import Command as DbbackupCommand
from dbbackup.signals import post_backup
from django.core.files.storage import FileSystemStorage
from django.core.management.base import CommandError
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.utils import timezone

from dbops import (
    backup_files,
    backup_readback,
    backups,
    conf,
    encryption,
    offsite,
    pooler,
    replication,
    retention,
    runs,
)
from dbops.commands import add_database_argument
from dbops.files import sync_file
from dbops.masking import safe_error
from dbops.models import BackupRecord
from dbops.pings import PingsMonitor


class Command(PingsMonitor, DbbackupCommand):
    help = (
        "Back up the database (gzipped), read it back, and record the run as a BackupRecord. "
        "--clean keeps the newest backup of the last DBOPS_BACKUP_KEEP_DAILY days, "
        "DBOPS_BACKUP_KEEP_WEEKLY weeks and DBOPS_BACKUP_KEEP_MONTHLY months, the "
        "DBOPS_BACKUP_KEEP_MIN newest, the newest verified and every pinned one, and deletes "
        "the others locally and remotely; --clean --dry-run lists that and takes no backup; "
        "--verify restores the new backup into a scratch database and compares every table's "
        "count and checksum; --encrypt encrypts it to DBOPS_BACKUP_GPG_PUBLIC_KEY. Every "
        'backup is also copied to STORAGES["dbbackup_remote"] when it is set. Exit 1 on any '
        "failure."
    )

    # One database per run (each run is one record): --database is an alias argparse checks,
    # not dbbackup's comma-separated list, so that a wrong one is a bad command line (exit 2).
    option_list = tuple(
        (flags, kwargs)
        for flags, kwargs in DbbackupCommand.option_list
        if "--database" not in flags
    )

    ping_setting = "BACKUP_PING_URL"

    def pings_this_run(self, options: dict) -> bool:
        return not options.get("dry_run")  # a listing, not a backup

    def add_arguments(self, parser):
        super().add_arguments(parser)
        add_database_argument(parser, "Database alias to back up (default: default).", "-d")
        parser.add_argument(
            "--verify",
            action="store_true",
            help="Restore the new backup into a scratch database and compare every table's "
            "count and checksum.",
        )
        parser.add_argument(
            "--from-replica",
            action="store_true",
            help="Dump the standby DBOPS_REPLICA_DATABASE instead of the database itself "
            "(counts and checksums in the same snapshot); refused when it replays more than "
            "DBOPS_REPLICA_BACKUP_MAX_LAG_SECONDS behind.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="With --clean: take no backup, delete nothing; list what retention would "
            "delete and what it keeps, and why.",
        )

    def handle(self, **options):
        with contextlib.ExitStack() as self.cleanup:
            self.back_up(**options)

    def back_up(self, **options):
        verify, clean = options.pop("verify", False), options.get("clean")
        if options.pop("dry_run", False):
            if not clean or verify:
                raise CommandError("--dry-run goes with --clean alone", returncode=2)
            self.list_retention()
            return
        # Behind a transaction pooler, pg_dump, the snapshot and the record use the direct
        # connection (the record then names that alias).
        alias = pooler.command_alias(options["database"], "dbbackup")
        # dbops encrypts itself (to a key file, after keeping a plain copy to verify).
        encrypt = options.get("encrypt") or conf.BACKUP_ENCRYPT
        self.public_key = self.encryption_key() if encrypt else None
        # pg_dump reads the standby when asked to; the record stays with the database. What
        # the user named decides: behind the pooler `alias` is the direct one, still "default".
        from_replica = options.pop("from_replica", False)
        if from_replica and options["database"] != DEFAULT_DB_ALIAS:
            raise CommandError(
                "--from-replica backs up the default database from its standby "
                "(DBOPS_REPLICA_DATABASE); it does not go with --database",
                returncode=2,
            )
        self.dump_alias = self.standby_to_dump() if from_replica else alias
        options.update(compress=True, clean=False, database=self.dump_alias, encrypt=False)
        self.plain_copy: Path | None = None
        self.keep_plain_copy = verify
        self.record = self.start_record(alias)
        self.written_filename = None
        self.encrypted_sha256 = None
        self.stored_names: dict[str, str] = {}
        self.snapshot = backups.Snapshot()
        started = time.monotonic()
        post_backup.connect(self.remember_filename, dispatch_uid="dbops-backup-filename")
        try:
            super().handle(**options)
            path = backups.backup_path(self.written_filename)
            backup_readback.read_back(path, self.record.engine)
            self.record.sha256 = self.stored_sha256(path)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - every failure is recorded
            reason = safe_error(exc)
            self.delete_written_files()
            self.finish_record(alias, started, BackupRecord.Status.FAILED, reason)
            raise CommandError(f"dbbackup failed: {reason}", returncode=1) from None
        finally:
            post_backup.disconnect(dispatch_uid="dbops-backup-filename")
        self.finish_record(alias, started, BackupRecord.Status.SUCCEEDED, "")
        if self.verbosity >= 1:
            standby = (
                f", dumped from the standby '{self.dump_alias}'" if self.record.dumped_from else ""
            )
            self.stdout.write(
                f"Backed up to {self.record.filename} ({self.record.size:,} bytes, "
                f"sha256 {self.record.sha256[:12]}…{standby})"
            )
        failures = []
        if verify:
            try:
                self.verify_new_backup()
            except CommandError as exc:
                failures.append(str(exc))
        failure = self.copy_off_site()
        if failure:
            failures.append(failure)
        if failures:
            # One line for cron; nothing is pruned after a failure.
            raise CommandError("; ".join(failures), returncode=1)
        if clean:
            self.apply_retention()

    def apply_retention(self) -> None:
        outcome = retention.apply_retention()
        if self.verbosity >= 1:
            for decision, gone in outcome.deleted:
                what = " and ".join(gone)
                self.stdout.write(f"Deleted {decision.record.filename} ({what}): {decision.why}")
        for line in outcome.notes:
            self.stderr.write(line)
        if outcome.problems:
            raise CommandError(
                "retention could not delete everything it should: " + "; ".join(outcome.problems),
                returncode=1,
            )

    def list_retention(self) -> None:
        """What `--clean` would do now, every successful backup that still has a copy."""
        decisions = retention.plan()
        if not decisions:
            self.stdout.write("No backups to keep or delete.")
        for decision in decisions:
            verb = "keep" if decision.keep else "delete"
            self.stdout.write(f"would {verb} {decision.record.filename}: {decision.why}")

    def encryption_key(self) -> encryption.PublicKey:
        """The public key to encrypt to, checked before anything is dumped or recorded."""
        try:
            return encryption.configured_public_key()
        except encryption.EncryptionError as exc:
            raise CommandError(
                f"dbbackup refused: {safe_error(exc)}; no backup taken", returncode=1
            ) from None

    def standby_to_dump(self) -> str:
        """The standby's alias, once it is known to be a standby that keeps up (exit 1 with
        the reason otherwise, before anything is dumped or recorded)."""
        standby = replication.configured_alias()
        if standby is None:
            raise CommandError(
                "dbbackup --from-replica refused: no standby is configured "
                "(DBOPS_REPLICA_DATABASE names no database alias); no backup taken",
                returncode=1,
            )
        refusal = replication.backup_refusal(standby)
        if refusal is not None:
            raise CommandError(
                f"dbbackup --from-replica refused: {refusal}; no backup taken", returncode=1
            )
        return standby

    def start_record(self, alias: str) -> BackupRecord:
        runs.mark_abandoned(BackupRecord, alias)
        try:
            return runs.start_run(
                BackupRecord,
                alias,
                database=alias,
                dumped_from="" if self.dump_alias == alias else self.dump_alias,
                engine=connections[alias].settings_dict["ENGINE"].rsplit(".", 1)[-1],
            )
        except DatabaseError as exc:
            connections[alias].close()
            raise CommandError(
                f"dbbackup failed: database '{alias}' is unreachable ({type(exc).__name__}); "
                f"no backup taken, nothing recorded",
                returncode=1,
            ) from None

    def _save_new_backup(self, database):
        with backups.consistent_snapshot(self.dump_alias) as snapshot:
            if snapshot.id is not None:
                self.connector.dump_suffix = (
                    f"{self.connector.dump_suffix} --snapshot={snapshot.id}"
                )
            self.snapshot = snapshot
            super()._save_new_backup(database)

    def remember_filename(self, sender, filename=None, **kwargs):
        self.written_filename = self.stored_names.get(filename, filename)

    def write_to_storage(self, file, path):
        """Write a backup (or its .metadata) whole or not at all (see dbops.backup_files).

        The storage picks another name when `path` exists (two backups in one second); the
        name it really used is remembered, so the record points at this backup's file and
        the metadata follows the backup's name.
        """
        backup_name = path.removesuffix(".metadata")
        if path != backup_name and backup_name in self.stored_names:
            path = f"{self.stored_names[backup_name]}.metadata"
        self.logger.info("Writing file to %s", path)
        storage = self.storage.storage
        if self.public_key is not None and path == backup_name:
            stored = self.write_encrypted(storage, path, file)
        elif isinstance(storage, FileSystemStorage):
            stored = backup_files.write_privately(storage, path, file)
        else:
            stored = storage.save(name=path, content=file)
        self.stored_names[path] = stored

    def write_encrypted(self, storage, path, file) -> str:
        """Store the backup encrypted (name + .gpg), and only that; with --verify, keep the
        plain dump for verification in a private folder removed when the command ends.

        The plain dump is read back first (pg_restore --list): the stored ciphertext cannot
        be, and a dump that does not restore must not be encrypted and recorded a success.
        """
        file.seek(0)
        backup_readback.read_back_file(file, path, self.record.engine)
        work = encryption.private_copy_directory(Path(conf.BACKUP_DIR))
        self.cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        file.seek(0)
        source = file
        if self.keep_plain_copy:
            self.plain_copy = work / Path(path).name  # its suffix says how to read it (.gz)
            with self.plain_copy.open("xb") as handle:
                shutil.copyfileobj(file, handle, 1 << 20)
            source = self.plain_copy
        encrypted = work / "encrypted"
        encryption.encrypt(source, encrypted, self.public_key)
        sync_file(encrypted)
        self.encrypted_sha256 = backups.file_sha256(encrypted)
        name = path + encryption.SUFFIX
        if isinstance(storage, FileSystemStorage):
            return backup_files.publish(storage, name, encrypted)
        with encrypted.open("rb") as handle:
            return storage.save(name=name, content=handle)

    def stored_sha256(self, path: Path) -> str:
        """The stored file's sha256, for the record. An encrypted backup's plain dump was read
        back before encryption, so what the storage kept must be what gpg wrote, byte for
        byte, or it will not decrypt: one pass over the file checks that and records it."""
        stored = backups.file_sha256(path)
        if self.encrypted_sha256 is not None and stored != self.encrypted_sha256:
            raise backup_readback.Unreadable(
                f"{path.name} does not read back: the stored file (sha256 {stored[:12]}…) is "
                f"not what gpg wrote ({self.encrypted_sha256[:12]}…)"
            )
        return stored

    def copy_off_site(self) -> str | None:
        """Copy the new backup to the remote storage, if there is one; the failure, or None."""
        if not conf.has_remote_backup_storage():
            return None
        failure = offsite.copy_to_remote(self.record, backups.backup_path(self.record.filename))
        if failure is None and self.verbosity >= 1:
            self.stdout.write(f"Copied off-site: {self.record.remote_detail}")
        if failure is not None:
            return f"{self.record.filename} is a good local backup, but its {failure}"
        return None

    def delete_written_files(self) -> None:
        """A failed run leaves no file of its own (a backup without its metadata, say), so
        nothing lists or restores a backup whose record says it failed."""
        for name in self.stored_names.values():
            with contextlib.suppress(OSError):
                self.storage.storage.delete(name)

    def finish_record(self, alias, started, status, error) -> None:
        record = self.record
        record.status = status
        record.error = error
        record.finished_at = timezone.now()
        record.duration_seconds = time.monotonic() - started
        record.table_counts = self.snapshot.counts
        record.table_checksums = self.snapshot.checksums
        record.migrations = self.snapshot.migrations
        if status == BackupRecord.Status.SUCCEEDED:
            record.encrypted = self.public_key is not None
            record.encryption_key = self.public_key.fingerprint if self.public_key else ""
            path = backups.backup_path(self.written_filename)
            record.filename = self.written_filename
            record.size = path.stat().st_size
        if not runs.save_outcome(record):
            self.stderr.write(
                f"Could not record the outcome of backup run {record.pk}: the database did not "
                f"answer for {runs.RECORD_RETRY_SECONDS:g} s; the run will show as abandoned."
            )

    def verify_new_backup(self) -> None:
        try:
            detail = backups.verify(self.record, notice=self.stderr.write, source=self.plain_copy)
        except backups.VerificationFailed as exc:
            raise CommandError(f"backup verification failed: {exc}", returncode=1) from None
        if self.verbosity >= 1:
            self.stdout.write(f"Verified {self.record.filename}: {detail}")
