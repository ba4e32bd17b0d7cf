"""`/metrics` against the real PostgreSQL server, checked by Debian's promtool.

The history is read in a health thread with a connection of its own, so these tests commit
their rows (`transaction=True`).
"""

import subprocess
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from caloria.models import User
from dbops import metrics, runs
from dbops.models import BackupRecord, ConsistencyRun, ImportRun
from tests.conftest import STRONG_SECRET_KEY

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fresh_health_results", "fresh_metrics"),
]

HEALTH_TOKEN = "health-token-" + "h3alth" * 5
METRICS_TOKEN = "metrics-token-" + "m3tr1c" * 5
DATABASE_PASSWORD = "db-pass-" + "s3cr3t" * 4
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


@pytest.fixture
def fresh_metrics():
    metrics.forget_cache()
    yield
    metrics.forget_cache()


@pytest.fixture
def metrics_settings(settings, tmp_path):
    settings.DBOPS_HEALTH_CACHE_SECONDS = 0
    settings.DBOPS_HEALTH_TOKEN = HEALTH_TOKEN
    settings.DBOPS_METRICS_TOKEN = METRICS_TOKEN
    settings.SECRET_KEY = STRONG_SECRET_KEY
    settings.DBOPS_BACKUP_DIR = tmp_path / "backups"
    settings.DBOPS_BACKUP_DIR.mkdir()
    return settings


def scrape(client, token=METRICS_TOKEN, accept="text/plain"):
    headers = {"HTTP_ACCEPT": accept}
    if token:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client.get("/metrics", **headers)


def samples(text: str, parser=text_string_to_metric_families) -> dict:
    """{(name, ((label, value), ...)): value} of every sample."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in parser(text)
        for sample in family.samples
    }


def record_history():
    """A day of history: an old and a new backup, a failure, a verification, an off-site copy,
    an import and two consistency runs (the newer one could not run its checks)."""
    now = timezone.now()
    old = now - timedelta(days=3)
    BackupRecord.objects.create(
        started_at=old,
        finished_at=old,
        status="succeeded",
        filename="old.psql.gz",
        size=100,
        duration_seconds=1.0,
        verification="passed",
        verified_at=now,
        remote_copy="copied",
        remote_copied_at=old + timedelta(minutes=1),
    )
    new = now - timedelta(hours=1)
    BackupRecord.objects.create(
        started_at=new - timedelta(seconds=5),
        finished_at=new,
        status="succeeded",
        filename="new.psql.gz",
        size=4096,
        duration_seconds=5.5,
        remote_copy="failed",
    )
    failed = now - timedelta(minutes=30)
    BackupRecord.objects.create(
        started_at=failed,
        finished_at=failed,
        status="failed",
        error=f"pg_dump: password {DATABASE_PASSWORD} token {HEALTH_TOKEN} {METRICS_TOKEN}",
    )
    ImportRun.objects.create(
        started_at=old, finished_at=old, status="succeeded", source_path="/tmp/x.sqlite3"
    )
    ConsistencyRun.objects.create(
        started_at=old,
        finished_at=old,
        status="failed",
        findings={"sequence": 2, "foreign_key": 1},
        findings_total=3,
    )
    ConsistencyRun.objects.create(
        started_at=now, finished_at=now, status="failed", error=f"unreachable {DATABASE_PASSWORD}"
    )
    return {"new": new, "old": old, "failed": failed, "consistency": now}


def test_anonymous_callers_and_wrong_tokens_get_401_and_a_non_staff_session_403(
    client, metrics_settings
):
    anonymous = scrape(client, token=None)
    wrong = scrape(client, token="not-the-token")
    user = User.objects.create_user("eater", password="pw-123456")
    client.force_login(user)
    not_staff = scrape(client, token=None)

    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"].startswith("Bearer")
    assert wrong.status_code == 401
    assert not_staff.status_code == 403
    for response in (anonymous, wrong, not_staff):
        assert b"dbops_" not in response.content


def test_either_token_or_a_staff_session_gets_the_metrics(client, metrics_settings):
    by_metrics_token = scrape(client, token=METRICS_TOKEN)
    by_health_token = scrape(client, token=HEALTH_TOKEN)
    staff = User.objects.create_user("admin", password="pw-123456", is_staff=True)
    client.force_login(staff)
    by_staff = scrape(client, token=None)

    for response in (by_metrics_token, by_health_token, by_staff):
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/plain; version=0.0.4")
        assert samples(response.content.decode())[("dbops_database_up", ())] == 1


def test_the_metrics_say_what_the_history_tables_hold(client, metrics_settings):
    times = record_history()

    values = samples(scrape(client).content.decode())

    assert values[("dbops_backup_last_success_timestamp_seconds", ())] == pytest.approx(
        times["new"].timestamp()
    )
    assert values[("dbops_backup_last_success_size_bytes", ())] == 4096
    assert values[("dbops_backup_last_success_duration_seconds", ())] == 5.5
    assert values[("dbops_backup_last_failure_timestamp_seconds", ())] == pytest.approx(
        times["failed"].timestamp()
    )
    assert values[("dbops_backup_last_verified_timestamp_seconds", ())] == pytest.approx(
        times["old"].timestamp()
    )
    assert values[("dbops_backup_last_offsite_copy_timestamp_seconds", ())] == pytest.approx(
        (times["old"] + timedelta(minutes=1)).timestamp()
    )
    assert values[("dbops_import_last_run_status", (("status", "succeeded"),))] == 1
    assert values[("dbops_import_last_run_status", (("status", "failed"),))] == 0
    assert values[("dbops_consistency_last_run_status", (("status", "failed"),))] == 1
    assert values[("dbops_consistency_last_run_timestamp_seconds", ())] == pytest.approx(
        times["consistency"].timestamp()
    )
    # Findings come from the newest run whose checks ran, every kind present (0 or more).
    assert values[("dbops_consistency_findings", (("kind", "sequence"),))] == 2
    assert values[("dbops_consistency_findings", (("kind", "foreign_key"),))] == 1
    assert values[("dbops_consistency_findings", (("kind", "migrations"),))] == 0
    assert values[("dbops_database_migrations_unapplied", ())] == 0
    assert values[("dbops_history_up", ())] == 1
    assert values[("dbops_health_check_up", (("check", "DatabaseReachable"),))] == 1
    assert ("dbops_health_check_duration_seconds", (("check", "MigrationsApplied"),)) in values
    version = f"{connection.pg_version // 10000}.{connection.pg_version % 10000}"
    info = (("vendor", "postgresql"), ("version", version))
    assert values[("dbops_database_server_info", info)] == 1
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_connections")
        maximum = int(cursor.fetchone()[0])
    assert values[("dbops_database_max_connections", ())] == maximum
    assert 1 <= values[("dbops_database_connections", ())] <= maximum


def test_a_killed_backup_counts_as_a_failure_from_when_it_started(client, metrics_settings):
    """A backup killed mid-run (SIGKILL, the OOM killer) stays `running` until the next run
    marks it abandoned, with that moment as its finished_at: the failure is its start."""
    now = timezone.now()
    succeeded = now - timedelta(days=1)
    BackupRecord.objects.create(
        started_at=succeeded, finished_at=succeeded, status="succeeded", filename="a.psql.gz"
    )
    killed = now - timedelta(hours=20)
    BackupRecord.objects.create(started_at=killed, status="running", pid=999_999, host="gone")
    assert runs.mark_abandoned(BackupRecord) == 1  # what the next dbbackup does first

    values = samples(scrape(client).content.decode())

    assert values[("dbops_backup_last_failure_timestamp_seconds", ())] == pytest.approx(
        killed.timestamp(), abs=1
    )
    assert values[("dbops_backup_last_success_timestamp_seconds", ())] == pytest.approx(
        succeeded.timestamp(), abs=1
    )


def test_a_failed_check_and_no_history_at_all(client, metrics_settings):
    metrics_settings.DBOPS_BACKUP_CHECK = True

    values = samples(scrape(client).content.decode())

    assert values[("dbops_health_check_up", (("check", "BackupFresh"),))] == 0
    # Never is 0, so that `time() - x > 26h` fires for a backup that never ran.
    assert values[("dbops_backup_last_success_timestamp_seconds", ())] == 0
    assert ("dbops_backup_last_success_size_bytes", ()) not in values


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(client, metrics_settings):
    record_history()

    response = scrape(client, accept=f"{OPENMETRICS},text/plain;q=0.5")
    text = response.content.decode()

    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n")
    assert "# UNIT dbops_backup_last_success_size_bytes bytes" in text
    values = samples(text, parser=openmetrics_families)
    assert values[("dbops_backup_last_success_size_bytes", ())] == 4096
    info = [value for (name, _), value in values.items() if name == "dbops_database_server_info"]
    assert info == [1]


def test_promtool_finds_nothing_wrong_with_the_real_output(client, metrics_settings):
    record_history()
    text = scrape(client).content

    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, timeout=30
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == b""


def test_no_secret_reaches_any_label_or_value(client, metrics_settings, monkeypatch):
    monkeypatch.setitem(connection.settings_dict, "PASSWORD", DATABASE_PASSWORD)
    record_history()

    for accept in ("text/plain", OPENMETRICS):
        text = scrape(client, accept=accept).content.decode()
        for secret in (DATABASE_PASSWORD, HEALTH_TOKEN, METRICS_TOKEN, STRONG_SECRET_KEY):
            assert secret not in text
        assert "pg_dump" not in text and "unreachable" not in text


def test_each_history_query_reads_one_row_through_an_index(metrics_settings):
    """The cost of a scrape does not grow with the data: with sequential scans ruled out,
    no history query scans or sorts a table, each stops at LIMIT 1, and nothing counts a
    table but pg_stat_activity (at most max_connections rows)."""
    record_history()
    with CaptureQueriesContext(connection) as queries:
        metrics.read_history()

    history = [q["sql"] for q in queries if '"dbops_' in q["sql"]]
    assert len(history) == 8
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        for sql in history:
            cursor.execute(f"EXPLAIN {sql}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "Limit" in plan, sql
            assert "Seq Scan" not in plan and "Sort" not in plan, (sql, plan)
        cursor.execute("RESET enable_seqscan")
    counted = [q["sql"] for q in queries if "count(" in q["sql"].lower()]
    assert all("pg_stat_activity" in sql for sql in counted)


def test_without_archiving_or_a_standby_the_metrics_say_so_and_nothing_more(
    client, metrics_settings
):
    values = samples(scrape(client).content.decode())

    assert values[("dbops_wal_archiving_enabled", ())] == 0
    assert values[("dbops_replica_configured", ())] == 0
    names = {name for name, _ in values}
    assert not {
        name for name in names if name.startswith(("dbops_wal_archive_", "dbops_replica_"))
    } - {"dbops_replica_configured"}
