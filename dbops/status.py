"""The database status page: everything staff need to answer "which database, how healthy".

Staff-only (wrapped by the admin site), read-only, never a password: engine and version,
where the database is, the connection settings in force, which .env was read, migrations,
each table's rows and size, the newest backups and import runs, the health checks, a
backup directory that others can open, the standby's lag and the WAL archiver.
"""

from __future__ import annotations

from pathlib import Path

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.template.response import TemplateResponse

from dbops import conf, pooler_status, runs
from dbops.archiving import archiver_state
from dbops.backup_chart import backup_chart
from dbops.backup_files import loose_permissions
from dbops.database import migration_state, probe_connection
from dbops.envinfo import describe_location
from dbops.health import all_checks
from dbops.models import BackupRecord, ImportRun, RestoreRun
from dbops.replication import status_of_standby


def database_status(request, admin_site):
    context = {
        **admin_site.each_context(request),
        "title": "Database status",
        **collect_status(),
    }
    return TemplateResponse(request, "admin/dbops/database_status.html", context)


def headline() -> dict:
    """The short version for the admin index: database, last backup, health."""
    connection = connections[DEFAULT_DB_ALIAS]
    probe = probe_connection(connection)
    failing = [result for result in health_results() if result.error]
    return {
        "database": probe.headline if probe.reachable else f"{probe.description}: unreachable",
        "reachable": probe.reachable,
        "last_backup": _newest(BackupRecord, status=BackupRecord.Status.SUCCEEDED),
        "failing": failing,
    }


def collect_status() -> dict:
    connection = connections[DEFAULT_DB_ALIAS]
    probe = probe_connection(connection)
    if probe.reachable:
        runs.mark_abandoned(BackupRecord)
        runs.mark_abandoned(ImportRun)
        runs.mark_abandoned(RestoreRun)
    backup_dir = conf.BACKUP_DIR
    status = {
        "probe": probe,
        "location": describe_location(connection.settings_dict),
        "settings_in_force": [
            (conf.ENVIRONMENT_VARIABLE, conf.ENVIRONMENT),
            (".env file", _env_file()),
            ("CONN_MAX_AGE", connection.settings_dict.get("CONN_MAX_AGE")),
            ("CONN_HEALTH_CHECKS", connection.settings_dict.get("CONN_HEALTH_CHECKS")),
            ("connect timeout (s)", conf.CONNECT_TIMEOUT),
            ("backup directory", backup_dir or "not configured"),
            *pooler_status.status_rows(),
        ],
        "backup_directory": backup_dir,
        "backup_directory_problem": backup_dir and loose_permissions(Path(backup_dir)),
        "sources": _sources(),
        "health": health_results(),
        "backups": _recent(BackupRecord),
        "backup_chart": backup_chart(),
        "imports": _recent(ImportRun),
        "newest_offsite_verified": _newest_offsite_verified(),
        "newest_restore": _newest(RestoreRun),
        "migrations": None,
        "tables": [],
        "standby": status_of_standby(),
        "wal_archiving": None,
    }
    if probe.reachable:
        try:
            status["migrations"] = _migrations(connection)
            status["tables"] = _tables(connection)
            status["wal_archiving"] = archiver_state(connection)
        except DatabaseError:
            status["probe_error"] = "the database stopped answering while this page was built"
    return status


def health_results():
    from dbops.health_runner import run_checks

    return run_checks(all_checks())


def _env_file() -> str:
    path = conf.ENV_FILE
    if path is None:
        return "not reported"
    return f"{path}" if conf.ENV_FILE_EXISTS else f"{path} (not found)"


def _sources() -> list[tuple[str, str]] | None:
    """Where each setting came from, as the project's settings reported it (None: they did
    not)."""
    sources = conf.SETTING_SOURCES
    return None if sources is None else sorted(sources.items())


def _migrations(connection) -> dict:
    state = migration_state(connection)
    return {"applied": state.applied, "unapplied": state.names}


def _tables(connection) -> list[dict]:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT relname, n_live_tup, pg_total_relation_size(relid) "
                "FROM pg_stat_user_tables ORDER BY pg_total_relation_size(relid) DESC"
            )
            return [
                {"name": name, "rows": rows, "size": size, "estimated": True}
                for name, rows, size in cursor.fetchall()
            ]
        tables = []
        for name in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT count(*) FROM {connection.ops.quote_name(name)}")
            tables.append({"name": name, "rows": cursor.fetchone()[0], "size": None})
        return tables


def _recent(model, limit: int = 5):
    try:
        return list(model.objects.order_by("-started_at", "-id")[:limit])
    except DatabaseError:
        return []


def _newest_offsite_verified():
    """The newest backup that both reached the off-site storage (and is still there) and
    passed verification: its age is how much a lost machine would cost."""
    return _newest(
        BackupRecord,
        status=BackupRecord.Status.SUCCEEDED,
        remote_copy=BackupRecord.RemoteCopy.COPIED,
        remote_deleted_at__isnull=True,
        verification=BackupRecord.Verification.PASSED,
    )


def _newest(model, **filters):
    try:
        return model.objects.filter(**filters).order_by("-started_at", "-id").first()
    except DatabaseError:
        return None
