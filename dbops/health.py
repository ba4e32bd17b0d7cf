"""Health checks that monitors can rely on (django-health-check 4.x check classes).

Every failure message is fixed text: a check never passes on exception text, which under
psycopg2 names the host and port. Each check runs in a long-lived thread of its own per
process (see health_runner.py), so a probe reuses that thread's persistent connection instead
of opening a new one, and the cost of a probe does not grow with the data: no probe counts a
big table.
"""

from __future__ import annotations

import dataclasses
import datetime
import shutil
import time
from pathlib import Path

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.loader import MigrationLoader
from health_check import HealthCheck
from health_check.exceptions import ServiceUnavailable, ServiceWarning

from dbops import conf

DATABASE_TIMEOUT = datetime.timedelta(seconds=3)

_expected_migrations: set[tuple[str, str]] | None = None


def prepare_connection(alias: str):
    """The alias's connection, dropped first if it broke or outlived CONN_MAX_AGE.

    Django does this for the request thread at each request's start and end; a health
    thread is not a request thread, so it does it itself.
    """
    connection = connections[alias]
    connection.close_if_unusable_or_obsolete()
    # The check's own query tests the connection; CONN_HEALTH_CHECKS' extra ping (Django
    # resets its flag above) would only double every probe's round trips. A failure marks
    # the connection, and the next probe's call above replaces it.
    if connection.connection is not None:
        connection.health_check_done = True
    return connection


def expected_migrations() -> set[tuple[str, str]]:
    """Every migration this code base has (read from disk once per process)."""
    global _expected_migrations
    if _expected_migrations is None:
        loader = MigrationLoader(None, ignore_no_migrations=True)
        _expected_migrations = set(loader.disk_migrations)
    return _expected_migrations


def rows_of(alias: str, query: str, failure: str) -> list[tuple]:
    """The rows of a query on the alias's persistent connection; any database error is a
    failed check with a fixed message (never the driver's text, which names host and port)."""
    try:
        connection = prepare_connection(alias)
        with connection.cursor() as cursor:
            cursor.execute(query)
            return cursor.fetchall()
    except DatabaseError:
        raise ServiceUnavailable(failure) from None


@dataclasses.dataclass
class DatabaseReachable(HealthCheck):
    """`SELECT 1` on the normal (persistent) connection."""

    alias: str = DEFAULT_DB_ALIAS
    timeout = DATABASE_TIMEOUT

    def run(self):
        rows_of(self.alias, "SELECT 1", failure="database unreachable")


@dataclasses.dataclass
class DatabaseEngine(HealthCheck):
    """Production runs on PostgreSQL, and nothing else."""

    alias: str = DEFAULT_DB_ALIAS

    def run(self):
        problem = engine_problem(connections[self.alias].vendor, conf.ENVIRONMENT)
        if problem:
            raise ServiceUnavailable(problem)


def engine_problem(vendor: str, environment: str) -> str | None:
    if environment == "production" and vendor != "postgresql":
        return "production is not running on PostgreSQL"
    return None


@dataclasses.dataclass
class MigrationsApplied(HealthCheck):
    """No migration of this code base is missing from the database."""

    alias: str = DEFAULT_DB_ALIAS
    timeout = DATABASE_TIMEOUT

    def run(self):
        query = "SELECT app, name FROM django_migrations"
        applied = set(rows_of(self.alias, query, failure="migration state unknown"))
        missing = expected_migrations() - applied
        if missing:
            raise ServiceUnavailable(f"{len(missing)} migration(s) not applied")


@dataclasses.dataclass
class BackupFresh(HealthCheck):
    """The newest successful backup is younger than DBOPS_BACKUP_MAX_AGE_HOURS, and when an
    off-site storage is configured, it reached it: a machine lost with its disk must not take
    the only copy of the newest backup with it."""

    timeout = DATABASE_TIMEOUT

    def run(self):
        if not conf.BACKUP_CHECK:
            return
        try:
            prepare_connection(DEFAULT_DB_ALIAS)
            age = newest_backup_age()
            off_site = newest_backup_off_site() if conf.has_remote_backup_storage() else None
        except DatabaseError:
            raise ServiceUnavailable("backup history unavailable") from None
        if age is None:
            raise ServiceUnavailable("no backup found")
        limit = conf.BACKUP_MAX_AGE_HOURS * 3600
        if age > limit:
            raise ServiceUnavailable(
                f"newest backup is older than {conf.BACKUP_MAX_AGE_HOURS} hours"
            )
        if off_site is False:
            raise ServiceUnavailable("newest backup has no off-site copy")


@dataclasses.dataclass
class BackupDiskSpace(HealthCheck):
    """Room left where backups are written."""

    def run(self):
        directory = existing_ancestor(Path(conf.BACKUP_DIR))
        free_mib = shutil.disk_usage(directory).free // (1024 * 1024)
        if free_mib < conf.BACKUP_MIN_FREE_MB:
            raise ServiceWarning(f"less than {conf.BACKUP_MIN_FREE_MB} MiB free for backups")


def existing_ancestor(path: Path) -> Path:
    return next((p for p in (path, *path.parents) if p.exists()), Path("/"))


def newest_backup_off_site() -> bool | None:
    """Whether the newest successful backup still on disk was copied off-site (None: none)."""
    from dbops.models import BackupRecord

    remote_copy = (
        BackupRecord.objects.filter(status=BackupRecord.Status.SUCCEEDED, deleted_at__isnull=True)
        .order_by("-finished_at")
        .values_list("remote_copy", flat=True)
        .first()
    )
    return None if remote_copy is None else remote_copy == BackupRecord.RemoteCopy.COPIED


def newest_backup_age() -> float | None:
    """Seconds since the newest successful backup still on disk finished (None: no backup)."""
    from dbops.models import BackupRecord

    newest = (
        BackupRecord.objects.filter(status=BackupRecord.Status.SUCCEEDED, deleted_at__isnull=True)
        .order_by("-finished_at")
        .values_list("finished_at", flat=True)
        .first()
    )
    if newest is None:
        return None
    return max(0.0, time.time() - newest.timestamp())


DATABASE_CHECKS = [DatabaseReachable]
ALL_CHECKS = [DatabaseReachable, DatabaseEngine, MigrationsApplied, BackupFresh, BackupDiskSpace]


def all_checks() -> list[HealthCheck]:
    """The checks of `/health/`, the status page and `/metrics`: ALL_CHECKS, WAL archiving
    (which passes when archive_mode is off), and the standby's lag when DBOPS_REPLICA_DATABASE
    names one. Read at each probe, so a project's settings (and a test's) decide."""
    from dbops.archiving import WalArchiving
    from dbops.replication import ReplicaLag, configured_alias

    checks = [check() for check in ALL_CHECKS] + [WalArchiving()]
    standby = configured_alias()
    if standby is not None:
        checks.append(ReplicaLag(alias=standby))
    return checks
