"""The checks a restored database passes before it may go into service (dbops.restore).

Each takes a connection to the restored database and the backup's record, and returns what
it proved, in one line, or raises RestoreFailed saying what differs: they are what makes a
swap safe, so each compares with what was recorded at backup time, not with the live
database (which may be the very thing that went wrong).
"""

from __future__ import annotations

from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder

from dbops import backups, consistency
from dbops.database import migration_state
from dbops.models import BackupRecord
from dbops.table_checksums import table_checksums


class RestoreFailed(Exception):
    """A step failed or was refused; the live database is as it was (the message says why)."""


def check_migrations(restored, record: BackupRecord) -> str:
    """The restored database's migrations are the record's, and this code can serve it: none
    it lacks, none it does not know (a backup of newer code)."""
    newest = backups.migration_state(restored)
    if newest != record.migrations:
        differ = sorted(
            f"{app}: {record.migrations.get(app, 'none')} recorded, {newest.get(app, 'none')} "
            f"restored"
            for app in set(newest) | set(record.migrations)
            if newest.get(app) != record.migrations.get(app)
        )
        raise RestoreFailed("migrations differ from the record: " + "; ".join(differ[:10]))
    state = migration_state(restored)
    if state.unapplied:
        raise RestoreFailed(
            f"this code has {len(state.unapplied)} migration(s) the backup lacks "
            f"({state.shown()}): restore it with the code it was taken with, or migrate a "
            f"copy kept with --keep-restored"
        )
    loader = MigrationLoader(None, ignore_no_migrations=True)
    known = set(loader.disk_migrations) | {
        replaced for migration in loader.disk_migrations.values() for replaced in migration.replaces
    }
    unknown = sorted(
        f"{app}.{name}"
        for app, name in MigrationRecorder(restored).applied_migrations()
        if app in loader.migrated_apps and (app, name) not in known
    )
    if unknown:
        raise RestoreFailed(
            f"the backup has migration(s) this code does not know ({', '.join(unknown[:5])}): "
            f"it was taken with newer code"
        )
    return f"{len(newest)} apps at the recorded migrations; nothing to apply or unknown"


def check_rows(restored, record: BackupRecord) -> str:
    """Every table holds the rows recorded at backup time: the same count, and the same
    checksum where the backup recorded checksums (a changed value fails too), compared as
    verification compares them (dbops.backups.compared)."""
    return backups.compared(record, table_checksums(restored))


def check_consistency(restored) -> str:
    findings, _ = consistency.run_checks(restored)
    if findings:
        shown = "; ".join(f"{finding.subject}: {finding.detail}" for finding in findings[:5])
        raise RestoreFailed(f"{len(findings)} finding(s): {shown}")
    return "no findings"
