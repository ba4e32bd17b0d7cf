"""Backups you can trust: recorded, kept by a rule that never drops the last good one, and
proved by restoring them.

django-dbbackup writes the files (pg_dump --format=custom, or SQLite's backup API, gzipped);
this module adds what it lacks: the row counts and migration state at backup time (taken in
the very snapshot pg_dump reads), retention by age with a floor of good backups that never
drops the newest verified one, and restore-verification into a scratch database that is always
dropped (by the next verification, when a killed one could not).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import tempfile
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.db import DatabaseError, connections, transaction
from django.utils import timezone

from dbops import conf, locks, pooler
from dbops.database import session_of_its_own
from dbops.files import file_sha256
from dbops.masking import safe_error
from dbops.models import BackupRecord
from dbops.pgrestore import RestoreError, gunzipped, restore_archive
from dbops.table_checksums import SnapshotChecksums, table_checksums


class VerificationFailed(Exception):
    pass


def backup_path(filename: str) -> Path:
    return Path(conf.BACKUP_DIR) / filename


def migration_state(connection) -> dict[str, str]:
    """The newest applied migration of each app."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT app, max(name) FROM django_migrations GROUP BY app ORDER BY app")
        return dict(cursor.fetchall())


def table_counts(connection) -> dict[str, int]:
    """Exact rows of every table, read in the caller's transaction (and snapshot)."""
    counts = {}
    with connection.cursor() as cursor:
        for table in sorted(connection.introspection.table_names(cursor)):
            cursor.execute(f"SELECT count(*) FROM {connection.ops.quote_name(table)}")
            counts[table] = cursor.fetchone()[0]
    return counts


@dataclass
class Snapshot:
    """What a backup's snapshot held: its id (PostgreSQL), the newest migration of each app,
    the rows of each table and (PostgreSQL) each table's checksum."""

    id: str | None = None
    migrations: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    checksums: dict[str, dict] = field(default_factory=dict)


@contextlib.contextmanager
def consistent_snapshot(alias: str):
    """Yield a Snapshot from one repeatable-read transaction.

    On PostgreSQL the snapshot id is exported, so pg_dump (`--snapshot`) dumps exactly the
    rows that are counted and checksummed; the transaction stays open until the dump is
    written. The counts and checksums come from one pass of a session of their own in that
    snapshot, running while pg_dump dumps (dbops.table_checksums.SnapshotChecksums): they
    are filled in once the body is done, and their failure fails the backup.
    """
    connection = connections[alias]
    with transaction.atomic(using=alias):
        if connection.vendor != "postgresql":
            yield Snapshot(counts=table_counts(connection), migrations=migration_state(connection))
            return
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cursor.execute("SELECT pg_export_snapshot()")
            snapshot = Snapshot(id=cursor.fetchone()[0])
        checksums = SnapshotChecksums(alias, snapshot.id)
        try:
            snapshot.migrations = migration_state(connection)
            yield snapshot
        finally:
            checksums.wait()
        snapshot.checksums = checksums.result()
        snapshot.counts = {table: value["rows"] for table, value in snapshot.checksums.items()}


# --------------------------------------------------------------------------- verification


def verify(
    record: BackupRecord, *, notice: Callable[[str], object], source: Path | None = None
) -> str:
    """Check the file's sha256, restore it into a scratch database, compare every table's row
    count and checksum with the record (`compared`).

    Stores the outcome on the record; raises VerificationFailed with the reason, in one line.
    A verification that cannot run (no pg_restore, no right to create a database) fails too:
    nobody proved the backup restores. `notice` hears of stale scratch
    databases dropped on the way. `source` is a plain copy of the backup to restore instead
    of the stored file, already checked by the caller (dbops.offsite.fetch_backup: the
    off-site copy, a decrypted one).
    """
    try:
        detail = _verify(record, notice, source)
    except VerificationFailed as exc:
        reason = str(exc)
    except (OSError, DatabaseError) as exc:
        reason = f"could not verify: {safe_error(exc)}"
    else:
        _store_verification(record, BackupRecord.Verification.PASSED, detail)
        return detail
    _store_verification(record, BackupRecord.Verification.FAILED, reason)
    raise VerificationFailed(reason)


def _store_verification(record: BackupRecord, outcome: str, detail: str) -> None:
    record.verification = outcome
    record.verified_at = timezone.now()
    record.verification_detail = detail[:5000]
    record.save(update_fields=["verification", "verified_at", "verification_detail"])


def _verify(record: BackupRecord, notice: Callable[[str], object], source: Path | None) -> str:
    if record.status != BackupRecord.Status.SUCCEEDED:
        raise VerificationFailed(f"backup {record.pk} did not succeed; nothing to verify")
    path = source or checked_file(record)
    if "sqlite" in record.engine:
        restored = _restored_sqlite_counts(path)
    else:
        # A backup recorded through a transaction pooler is restored over the direct connection.
        alias = pooler.session_alias(record.database, "verify_backup")
        restored = _restored_postgresql_checksums(path, alias, notice)
    return compared(record, restored) + "; sha256 ok"


def compared(record: BackupRecord, restored: dict[str, dict]) -> str:
    """How the restored tables ({table: {"rows", "sha256"?}}) compare with the record: each
    table's count, and its checksum when the record has checksums. Raises VerificationFailed
    naming every table that differs (at most 10 of each kind)."""
    rows = {table: value["rows"] for table, value in restored.items()}
    problems = []
    counts = [
        f"{table}: {expected} at backup, {rows.get(table, 'missing')} restored"
        for table, expected in sorted(record.table_counts.items())
        if rows.get(table) != expected
    ]
    if counts:
        problems.append("row counts differ: " + "; ".join(counts[:10]))
    checksums = []
    for table, expected in sorted(record.table_checksums.items()):
        got = restored.get(table)
        if got is None:
            checksums.append(f"{table} (missing from the restore)")
        elif got.get("sha256") != expected["sha256"]:
            same = "counts equal" if got["rows"] == expected["rows"] else "counts differ"
            checksums.append(
                f"{table} ({same}: {expected['rows']} at backup, {got['rows']} restored)"
            )
    checksums += [
        f"{table} (not in the backup's record)"
        for table in sorted(set(restored) - set(record.table_checksums))
        if record.table_checksums
    ]
    if checksums:
        problems.append("checksums differ: " + "; ".join(checksums[:10]))
    if problems:
        raise VerificationFailed(". ".join(problems))
    summary = f"restored {len(restored)} tables, {sum(rows.values()):,} rows: counts match"
    if record.table_checksums:
        return summary + ", checksums match"
    return summary + " (no checksums recorded: compared by counts only)"


def checked_file(record: BackupRecord) -> Path:
    """The backup's local file, once it is known to be the file the record describes (a
    successful backup, not deleted by retention, plain, the recorded sha256)."""
    if record.status != BackupRecord.Status.SUCCEEDED:
        raise VerificationFailed(f"backup {record.pk} did not succeed: it has no file")
    if record.deleted_at is not None:
        raise VerificationFailed(f"{record.filename} was deleted by retention")
    path = backup_path(record.filename)
    if not path.is_file():
        raise VerificationFailed(f"{path} is missing")
    if record.encrypted:
        raise VerificationFailed(
            f"{record.filename} is encrypted: verifying it needs the private key "
            f"(verify_backup --private-key FILE), which the server does not hold"
        )
    actual = file_sha256(path)
    if actual != record.sha256:
        raise VerificationFailed(
            f"{record.filename}: sha256 is {actual[:12]}…, the record says "
            f"{record.sha256[:12]}…: the file was changed or truncated"
        )
    return path


def _restored_sqlite_counts(path: Path) -> dict[str, dict]:
    with tempfile.TemporaryDirectory(prefix="dbops-verify-") as folder:
        restored = Path(folder) / "restored.sqlite3"
        try:
            with gunzipped(path) as source, restored.open("wb") as target:
                shutil.copyfileobj(source, target)
            connection = sqlite3.connect(f"file:{restored}?mode=ro", uri=True)
            try:
                tables = [
                    row[0]
                    for row in connection.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'table' "
                        "AND name NOT LIKE 'sqlite_%'"
                    )
                ]
                return {
                    table: {
                        "rows": connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
                    }
                    for table in tables
                }
            finally:
                connection.close()
        except (OSError, EOFError, zlib.error, sqlite3.DatabaseError) as exc:
            raise VerificationFailed(f"the backup does not restore: {exc}") from None


def scratch_prefix(settings_dict: dict) -> str:
    """Scratch databases are named `{NAME}_verify_{10 hex}`, NAME cut so the whole fits in
    PostgreSQL's 63 characters."""
    return f"{settings_dict['NAME'][:45]}_verify_"


@contextlib.contextmanager
def scratch_database(alias: str, notice: Callable[[str], object]):
    """A new empty database, dropped on the way out whatever happened.

    A verification killed with SIGKILL cannot drop its database, so the admin session holds
    the scratch database's advisory lock from before it is created until the session ends;
    the server releases it whatever ends the session. Each verification first drops the
    scratch databases of its naming whose lock nobody holds, leaving a concurrent
    verification's alone.
    """
    settings_dict = connections[alias].settings_dict
    prefix = scratch_prefix(settings_dict)
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    with session_of_its_own(alias) as admin:
        with admin.cursor() as cursor:
            locks.hold(cursor, locks.SCRATCH_DATABASE, locks.key_of_name(name))
            _drop_stale_scratch_databases(cursor, prefix, alias, notice)
            cursor.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _drop_stale_scratch_databases(cursor, prefix: str, alias: str, notice) -> None:
    # Databases first, locks second: a verification takes its lock before it creates its
    # database, so any database listed here that is alive has its lock in the second query.
    cursor.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", [prefix])
    names = sorted(
        row[0] for row in cursor.fetchall() if re.fullmatch("[0-9a-f]{10}", row[0][len(prefix) :])
    )
    # Any database: another database whose name starts alike has scratch databases of the
    # same prefix, and its verifications hold their locks from sessions of their own.
    held = locks.held_keys(cursor, locks.SCRATCH_DATABASE, any_database=True)
    for stale in names:
        if locks.key_of_name(stale) in held:
            continue
        try:
            cursor.execute(f'DROP DATABASE IF EXISTS "{stale}" WITH (FORCE)')
        except DatabaseError as exc:
            notice(f"Could not drop stale scratch database {stale}: {safe_error(exc)}")
            continue
        notice(f"Dropped stale scratch database {stale} (left by a verification that was killed)")


def _restored_postgresql_checksums(
    path: Path, alias: str, notice: Callable[[str], object]
) -> dict[str, dict]:
    with scratch_database(alias, notice) as scratch:
        try:
            restore_archive(path, alias, scratch)
        except RestoreError as exc:
            raise VerificationFailed(str(exc)) from None
        with session_of_its_own(alias, scratch) as session:
            return table_checksums(session)
