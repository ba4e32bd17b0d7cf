"""`/metrics`: dbops' state in the Prometheus exposition format, computed at scrape time.

Everything comes from the database (the history tables) and from the health checks' results,
never from counters kept in a process, so every gunicorn worker answers the same and nothing
needs merging. Batch jobs are exported the way Prometheus' guidance asks: when they last
succeeded, as a Unix timestamp, for alerts on `time() - x`; a job that never ran exports 0,
so that "too old" fires for it too. Each history query reads one row through an index
(`LIMIT 1`), so a scrape costs the same however much history or data there is.

The queries run in a health thread of their own (dbops.health_runner) within the probe's
deadline, like the checks: a hung database gives `dbops_history_up 0` in time, not a hung
scrape. No label or value carries text from a record or an exception: labels are check
names, kinds, statuses and the server version.
"""

from __future__ import annotations

import threading
import time

from django.db import DEFAULT_DB_ALIAS
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import choose_encoder

from dbops import conf, consistency, replication
from dbops.archiving import archiver_state, archiving_families
from dbops.database import server_version
from dbops.health import DATABASE_TIMEOUT, all_checks, expected_migrations, prepare_connection
from dbops.health_runner import result_within, run_checks, submit_once

CONSISTENCY_KINDS = (
    consistency.MIGRATIONS,
    consistency.MISSING_TABLE,
    consistency.MISSING_COLUMN,
    consistency.SEQUENCE,
    consistency.FOREIGN_KEY,
    consistency.AGAINST,
)
RUN_STATUSES = ("running", "succeeded", "failed", "abandoned")

_cache: dict[str, tuple[float, bytes]] = {}
_cache_lock = threading.Lock()


def exposition(accept: str) -> tuple[bytes, str]:
    """The metrics text in the format the scraper asked for (OpenMetrics or the classic text
    format), and its content type; reused within DBOPS_HEALTH_CACHE_SECONDS per process."""
    encoder, content_type = choose_encoder(accept)
    started = time.monotonic()
    ttl = conf.HEALTH_CACHE_SECONDS
    with _cache_lock:
        cached = _cache.get(content_type)
    if ttl and cached is not None and started - cached[0] < ttl:
        return cached[1], content_type
    body = encoder(Snapshot(started))
    with _cache_lock:
        _cache[content_type] = (started, body)
    return body, content_type


def forget_cache() -> None:
    with _cache_lock:
        _cache.clear()


class Snapshot:
    """A prometheus_client collector: the families of one scrape."""

    def __init__(self, started: float):
        self.started = started

    def collect(self):
        future = submit_once("metrics", read_history)
        standby = replication.configured_alias()
        measurement = replication.submit_measurement(standby) if standby else None
        results = run_checks(all_checks(), self.started)
        try:
            history = result_within(future, self.started, DATABASE_TIMEOUT.total_seconds())
        except Exception:  # noqa: BLE001 - unavailable history is a metric, never error text
            history = None
        yield from health_families(results)
        yield value_family(
            "dbops_history_up", "Whether the history tables could be read", history is not None
        )
        if history is not None:
            yield from history_families(history)
            yield from archiving_families(history["archiver"])
        yield from replication.replication_families(self.started, measurement)


def health_families(results):
    up = GaugeMetricFamily(
        "dbops_health_check_up", "Whether the health check passed (1) or not (0)", labels=["check"]
    )
    seconds = GaugeMetricFamily(
        "dbops_health_check_duration_seconds",
        "How long the health check's newest run took",
        unit="seconds",
        labels=["check"],
    )
    database_up = None
    for result in results:
        name = type(result.check).__name__
        up.add_metric([name], 0.0 if result.error else 1.0)
        seconds.add_metric([name], result.time_taken)
        if name == "DatabaseReachable":
            database_up = not result.error
    yield up
    yield seconds
    database = GaugeMetricFamily(
        "dbops_database_up", "Whether the database answered SELECT 1 within the deadline"
    )
    database.add_metric([], float(bool(database_up)))
    yield database


def timestamp(value) -> float:
    return value.timestamp() if value is not None else 0.0


def read_history() -> dict:
    """One row of each history table through an index, and the server's own figures."""
    from dbops.models import BackupRecord, ConsistencyRun, ImportRun

    connection = prepare_connection(DEFAULT_DB_ALIAS)
    backups = BackupRecord.objects.order_by("-started_at")
    fields = ("finished_at", "size", "duration_seconds", "remote_copied_at", "status")
    history = {
        "backup": backups.filter(
            status=BackupRecord.Status.SUCCEEDED, deleted_at__isnull=True
        ).values(*fields)[:1],
        "backup_failed": backups.filter(status=BackupRecord.Status.FAILED).values(*fields)[:1],
        # Killed (SIGKILL, the OOM killer): a failure too. One query per status, so each is
        # one row through the (status, -started_at) index, with no sort of the two.
        "backup_abandoned": backups.filter(status=BackupRecord.Status.ABANDONED).values(
            "started_at"
        )[:1],
        "verified": backups.filter(verification=BackupRecord.Verification.PASSED).values(*fields)[
            :1
        ],
        "offsite": backups.filter(remote_copy=BackupRecord.RemoteCopy.COPIED).values(*fields)[:1],
        "import": ImportRun.objects.order_by("-started_at").values(
            "status", "started_at", "finished_at"
        )[:1],
        "consistency": ConsistencyRun.objects.order_by("-started_at").values(
            "status", "finished_at", "findings"
        )[:1],
        "consistency_checked": ConsistencyRun.objects.filter(findings__isnull=False)
        .order_by("-started_at")
        .values("status", "finished_at", "findings")[:1],
    }
    history = {key: next(iter(query), None) for key, query in history.items()}
    with connection.cursor() as cursor:
        cursor.execute("SELECT app, name FROM django_migrations")
        history["unapplied"] = len(expected_migrations() - set(cursor.fetchall()))
        history["connections"] = None
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT (SELECT count(*) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend'), "
                "current_setting('max_connections')::int, "
                "current_setting('superuser_reserved_connections')::int"
            )
            history["connections"] = cursor.fetchone()
    history["archiver"] = archiver_state(connection)
    history["vendor"] = connection.vendor
    history["version"] = server_version(connection)
    history["offsite_configured"] = conf.remote_backup_storage() is not None
    return history


def value_family(name, documentation, value, unit=""):
    family = GaugeMetricFamily(name, documentation, unit=unit)
    family.add_metric([], float(value))
    return family


def history_families(history: dict):
    backup = history["backup"]
    failed, abandoned = history["backup_failed"], history["backup_abandoned"]
    yield value_family(
        "dbops_backup_last_success_timestamp_seconds",
        "When the newest successful backup still on disk finished (0: none)",
        timestamp(backup and backup["finished_at"]),
        "seconds",
    )
    if backup is not None:
        yield value_family(
            "dbops_backup_last_success_size_bytes",
            "Size of the newest successful backup",
            backup["size"] or 0,
            "bytes",
        )
        yield value_family(
            "dbops_backup_last_success_duration_seconds",
            "How long the newest successful backup took",
            backup["duration_seconds"] or 0,
            "seconds",
        )
    # An abandoned run's finished_at is when a later run noticed it (runs.mark_abandoned),
    # perhaps a day on: the run itself died some time after it started.
    yield value_family(
        "dbops_backup_last_failure_timestamp_seconds",
        "When the newest failed backup ended, or the newest abandoned (killed) one started "
        "(0: none)",
        max(
            timestamp(failed and failed["finished_at"]),
            timestamp(abandoned and abandoned["started_at"]),
        ),
        "seconds",
    )
    verified = history["verified"]
    yield value_family(
        "dbops_backup_last_verified_timestamp_seconds",
        "When the newest backup that passed restore-verification was taken (0: none)",
        timestamp(verified and verified["finished_at"]),
        "seconds",
    )
    offsite = history["offsite"]
    yield value_family(
        "dbops_backup_offsite_configured",
        "Whether an off-site storage (STORAGES['dbbackup_remote']) is configured",
        history["offsite_configured"],
    )
    yield value_family(
        "dbops_backup_last_offsite_copy_timestamp_seconds",
        "When the newest off-site copy of a backup was made (0: none)",
        timestamp(offsite and offsite["remote_copied_at"]),
        "seconds",
    )
    yield from run_families("import", "import_sqlite", history["import"])
    yield from consistency_families(history)
    yield from database_families(history)


def run_families(prefix: str, command: str, run: dict | None):
    status = GaugeMetricFamily(
        f"dbops_{prefix}_last_run_status",
        f"The newest {command} run's status (1 on its status' series)",
        labels=["status"],
    )
    for name in RUN_STATUSES:
        status.add_metric([name], float(run is not None and run["status"] == name))
    yield status
    yield value_family(
        f"dbops_{prefix}_last_run_timestamp_seconds",
        f"When the newest {command} run finished (0: none, or still running)",
        timestamp(run and run["finished_at"]),
        "seconds",
    )


def consistency_families(history: dict):
    yield from run_families("consistency", "check_consistency", history["consistency"])
    checked = history["consistency_checked"]
    findings = GaugeMetricFamily(
        "dbops_consistency_findings",
        "Findings of each kind in the newest check_consistency run whose checks ran",
        labels=["kind"],
    )
    counts = (checked or {}).get("findings") or {}
    for kind in sorted(set(CONSISTENCY_KINDS) | set(counts)):
        findings.add_metric([kind], float(counts.get(kind, 0)))
    yield findings


def database_families(history: dict):
    info = InfoMetricFamily("dbops_database_server", "The database server's engine and version")
    info.add_metric([], {"vendor": history["vendor"], "version": history["version"]})
    yield info
    yield value_family(
        "dbops_database_migrations_unapplied",
        "Migrations of this code base not applied to the database",
        history["unapplied"],
    )
    if history["connections"] is not None:
        in_use, maximum, reserved = history["connections"]
        yield value_family(
            "dbops_database_connections", "Client connections open on the server", in_use
        )
        yield value_family(
            "dbops_database_max_connections", "The server's max_connections", maximum
        )
        yield value_family(
            "dbops_database_reserved_connections",
            "Of those, reserved for superusers (superuser_reserved_connections)",
            reserved,
        )
