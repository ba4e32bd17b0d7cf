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
import gzip
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
import zlib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import psycopg2
from django.db import connections, transaction
from django.utils import timezone

from dbops import conf, locks
from dbops.database import safe_error
from dbops.files import file_sha256
from dbops.models import BackupRecord


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


@contextlib.contextmanager
def consistent_snapshot(alias: str):
    """Yield (snapshot id or None, counts, migrations) from one repeatable-read transaction.

    On PostgreSQL the snapshot id is exported, so pg_dump (`--snapshot`) dumps exactly the
    rows that were counted; the transaction stays open until the dump is written.
    """
    connection = connections[alias]
    with transaction.atomic(using=alias):
        snapshot = None
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cursor.execute("SELECT pg_export_snapshot()")
                snapshot = cursor.fetchone()[0]
        yield snapshot, table_counts(connection), migration_state(connection)


# --------------------------------------------------------------------------- retention


def apply_retention(now=None) -> list[BackupRecord]:
    """Delete backup files past DBOPS_BACKUP_KEEP_DAYS, keeping DBOPS_BACKUP_KEEP_MIN good ones
    and, whatever its age, the newest backup whose verification passed.

    Only successful backups count towards the floor, so failures can never push the last
    good backup out. The floor alone can be filled by backups nobody proved restore (not
    verified, or failing verification) while the only proven ones age out: so the newest
    proven one always stays. Records stay, marked deleted. Returns the records whose files
    went.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(days=conf.BACKUP_KEEP_DAYS)
    good = BackupRecord.objects.filter(
        status=BackupRecord.Status.SUCCEEDED, deleted_at__isnull=True
    ).order_by("-started_at", "-id")
    newest_verified = good.filter(verification=BackupRecord.Verification.PASSED).first()
    deleted = []
    for position, record in enumerate(good):
        if position < conf.BACKUP_KEEP_MIN or record.started_at >= cutoff:
            continue
        if record == newest_verified:
            continue
        for path in (backup_path(record.filename), backup_path(record.filename + ".metadata")):
            path.unlink(missing_ok=True)
        record.deleted_at = now
        record.save(update_fields=["deleted_at"])
        deleted.append(record)
    return deleted


# --------------------------------------------------------------------------- verification


def verify(
    record: BackupRecord, *, notice: Callable[[str], object], source: Path | None = None
) -> str:
    """Check the file's sha256, restore it into a scratch database, compare row counts.

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
    except (OSError, psycopg2.Error) as exc:
        reason = f"could not verify: {safe_error(exc, record.database)}"
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
    path = source or backup_path(record.filename)
    if source is None:
        _check_stored_file(record, path)
    if "sqlite" in record.engine:
        restored = _restored_sqlite_counts(path)
    else:
        restored = _restored_postgresql_counts(path, record.database, notice)
    differences = [
        f"{table}: {expected} at backup, {restored.get(table, 'missing')} restored"
        for table, expected in sorted(record.table_counts.items())
        if restored.get(table) != expected
    ]
    if differences:
        raise VerificationFailed("row counts differ: " + "; ".join(differences[:10]))
    total = sum(restored.values())
    return f"restored {len(restored)} tables, {total:,} rows, counts match; sha256 ok"


def _check_stored_file(record: BackupRecord, path: Path) -> None:
    if record.deleted_at is not None:
        raise VerificationFailed(f"{record.filename} was deleted by retention")
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


def _gunzipped(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def _restored_sqlite_counts(path: Path) -> dict[str, int]:
    with tempfile.TemporaryDirectory(prefix="dbops-verify-") as folder:
        restored = Path(folder) / "restored.sqlite3"
        try:
            with _gunzipped(path) as source, restored.open("wb") as target:
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
                    table: connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
                    for table in tables
                }
            finally:
                connection.close()
        except (OSError, EOFError, zlib.error, sqlite3.DatabaseError) as exc:
            raise VerificationFailed(f"the backup does not restore: {exc}") from None


def _libpq_environment(settings_dict: dict) -> dict[str, str]:
    environment = {**os.environ}
    for key, variable in (
        ("HOST", "PGHOST"),
        ("PORT", "PGPORT"),
        ("USER", "PGUSER"),
        ("PASSWORD", "PGPASSWORD"),
    ):
        if settings_dict.get(key):
            environment[variable] = str(settings_dict[key])
    environment["PGCONNECT_TIMEOUT"] = str(conf.CONNECT_TIMEOUT)
    return environment


def _connect(settings_dict: dict, database: str):
    return psycopg2.connect(
        dbname=database,
        user=settings_dict.get("USER") or None,
        password=settings_dict.get("PASSWORD") or None,
        host=settings_dict.get("HOST") or None,
        port=settings_dict.get("PORT") or None,
        connect_timeout=conf.CONNECT_TIMEOUT,
    )


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
    admin = _connect(settings_dict, settings_dict["NAME"])
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            locks.hold(cursor, locks.SCRATCH_DATABASE, locks.key_of_name(name))
            _drop_stale_scratch_databases(cursor, prefix, alias, notice)
            cursor.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


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
        except psycopg2.Error as exc:
            notice(f"Could not drop stale scratch database {stale}: {safe_error(exc, alias)}")
            continue
        notice(f"Dropped stale scratch database {stale} (left by a verification that was killed)")


def _restored_postgresql_counts(
    path: Path, alias: str, notice: Callable[[str], object]
) -> dict[str, int]:
    pg_restore = shutil.which("pg_restore")
    if pg_restore is None:
        raise VerificationFailed(
            "pg_restore is not on PATH: install the PostgreSQL client tools "
            "(Debian: postgresql-client), at least the server's major version"
        )
    settings_dict = connections[alias].settings_dict
    with scratch_database(alias, notice) as scratch:
        process = subprocess.Popen(
            [pg_restore, "--no-owner", "--no-privileges", "--exit-on-error", "-d", scratch],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=_libpq_environment(settings_dict),
        )
        feed_error = None
        try:
            with _gunzipped(path) as source:
                shutil.copyfileobj(source, process.stdin, 1 << 20)
        except (OSError, EOFError, zlib.error) as exc:
            feed_error = exc
        finally:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
        stderr = process.stderr.read().decode(errors="replace")
        process.wait()
        if feed_error is not None or process.returncode != 0:
            reason = feed_error or (stderr.strip().splitlines() or ["pg_restore failed"])[-1]
            raise VerificationFailed(f"the backup does not restore: {safe_error(reason, alias)}")
        connection = _connect(settings_dict, scratch)
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
                )
                tables = [row[0] for row in cursor.fetchall()]
                counts = {}
                for table in tables:
                    cursor.execute(f'SELECT count(*) FROM "{table}"')
                    counts[table] = cursor.fetchone()[0]
            return counts
        finally:
            connection.close()
