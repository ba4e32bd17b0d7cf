"""Health endpoints against the real PostgreSQL server.

Each check runs in a long-lived thread of its own with its own connection, so these tests
commit their data (`transaction=True`) and close those connections after each test.
"""

import dataclasses
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone
from health_check import HealthCheck
from health_check.exceptions import ServiceUnavailable

from caloria.models import User
from dbops.health import engine_problem
from dbops.models import BackupRecord
from dbops.views import DbopsHealthView

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fresh_health_results"),
]

TOKEN = "health-token-" + "t0k3n" * 5
DATABASE_KEY = "DatabaseReachable(alias='default')"
DETAIL_KEYS = {
    "timestamp",
    "database_vendor",
    "database_name",
    "server_version",
    "user_count",
    "user_count_is_estimate",
    "newest_backup_age_seconds",
    "wal_archiving",
}


@pytest.fixture
def health_settings(settings, tmp_path):
    settings.DBOPS_HEALTH_CACHE_SECONDS = 0
    settings.DBOPS_HEALTH_TOKEN = TOKEN
    settings.DBOPS_BACKUP_DIR = tmp_path / "backups"
    settings.DBOPS_BACKUP_DIR.mkdir()
    settings.DBOPS_BACKUP_CHECK = False
    return settings


def get_json(client, url, **headers):
    response = client.get(url, HTTP_ACCEPT="application/json", **headers)
    return response.status_code, response.json(), response.content.decode()


def test_the_database_probe_is_healthy_and_speaks_json_or_html(client, health_settings):
    status, body, _ = get_json(client, "/health/database/")
    html = client.get("/health/database/")
    by_query = client.get("/health/database/?format=json")

    assert status == 200
    assert body == {DATABASE_KEY: "OK"}
    assert html.status_code == 200
    assert html["Content-Type"].startswith("text/html")
    assert by_query.json() == body


def test_every_check_runs_on_the_full_endpoint(client, health_settings):
    status, body, _ = get_json(client, "/health/")

    assert status == 200
    assert set(body) == {
        DATABASE_KEY,
        "DatabaseEngine(alias='default')",
        "MigrationsApplied(alias='default')",
        "BackupFresh()",
        "BackupDiskSpace()",
        "WalArchiving(alias='default')",
    }


def test_anonymous_callers_see_no_details_and_no_connection_data(client, health_settings):
    _, body, text = get_json(client, "/health/")

    assert "details" not in body
    settings_dict = connection.settings_dict
    for secret in (str(settings_dict["PORT"] or 5432), settings_dict["NAME"], TOKEN):
        assert secret not in text


def test_staff_see_the_details(client, health_settings):
    client.force_login(User.objects.create_user("oncall", password="x", is_staff=True))
    User.objects.create_user("someone")

    _, body, _ = get_json(client, "/health/database/")

    details = body["details"]
    assert set(details) == DETAIL_KEYS
    assert details["database_vendor"] == "postgresql"
    assert details["database_name"] == connection.settings_dict["NAME"]
    assert details["server_version"].split(".")[0].isdigit()
    assert (details["user_count"], details["user_count_is_estimate"]) == (2, False)
    assert datetime.fromisoformat(details["timestamp"]).tzinfo == UTC


def test_a_logged_in_user_who_is_not_staff_sees_no_details(client, health_settings):
    client.force_login(User.objects.create_user("member"))

    _, body, _ = get_json(client, "/health/database/")

    assert "details" not in body


def test_the_bearer_token_shows_details_and_a_wrong_one_does_not(client, health_settings):
    _, with_token, _ = get_json(client, "/health/", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    _, wrong, _ = get_json(client, "/health/", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x")

    assert set(with_token["details"]) == DETAIL_KEYS
    assert "details" not in wrong


def test_user_count_is_the_planner_estimate_above_the_threshold(client, health_settings):
    User.objects.bulk_create(User(username=f"user{n}") for n in range(50))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE caloria_user")
    health_settings.DBOPS_HEALTH_EXACT_COUNT_BELOW = 10

    _, body, _ = get_json(client, "/health/", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert body["details"]["user_count_is_estimate"] is True
    assert body["details"]["user_count"] == 50


def test_unapplied_migrations_make_the_full_check_unhealthy(client, health_settings):
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM django_migrations WHERE app = 'caloria' RETURNING app, name, applied"
        )
        removed = cursor.fetchall()
    try:
        status, body, _ = get_json(client, "/health/")
    finally:
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO django_migrations (app, name, applied) VALUES (%s, %s, %s)", removed
            )

    assert status == 500
    assert body["MigrationsApplied(alias='default')"] == (
        f"Unavailable: {len(removed)} migration(s) not applied"
    )


def test_production_must_be_on_postgresql():
    assert engine_problem("sqlite", "production") == "production is not running on PostgreSQL"
    assert engine_problem("postgresql", "production") is None
    assert engine_problem("sqlite", "development") is None


@pytest.mark.parametrize(
    "hours_old, expected",
    [
        (None, "Unavailable: no backup found"),
        (30, "Unavailable: newest backup is older than 26 hours"),
        (1, "OK"),
    ],
)
def test_backup_freshness(client, health_settings, hours_old, expected):
    health_settings.DBOPS_BACKUP_CHECK = True
    health_settings.DBOPS_BACKUP_MAX_AGE_HOURS = 26
    if hours_old is not None:
        finished = timezone.now() - timedelta(hours=hours_old)
        BackupRecord.objects.create(
            started_at=finished, finished_at=finished, status="succeeded", filename="b.gz"
        )
        BackupRecord.objects.create(started_at=timezone.now(), status="failed")

    status, body, _ = get_json(client, "/health/")
    _, probe, _ = get_json(client, "/health/database/")

    assert body["BackupFresh()"] == expected
    assert status == (200 if expected == "OK" else 500)
    assert probe == {DATABASE_KEY: "OK"}


def test_backup_freshness_is_not_checked_when_off(client, health_settings):
    status, body, _ = get_json(client, "/health/")

    assert body["BackupFresh()"] == "OK"
    assert status == 200


def test_little_free_space_for_backups_is_a_warning(client, health_settings):
    health_settings.DBOPS_BACKUP_MIN_FREE_MB = 10**12

    status, body, _ = get_json(client, "/health/")

    assert body["BackupDiskSpace()"].startswith("Warning: less than")
    assert status == 500


def test_liveness_touches_no_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/health/live/")

    assert response.status_code == 200


def test_a_result_is_reused_for_a_second_so_probe_storms_spare_the_database(
    client, health_settings
):
    health_settings.DBOPS_HEALTH_CACHE_SECONDS = 1
    health_settings.DBOPS_BACKUP_CHECK = True
    get_json(client, "/health/")  # no backup yet: BackupFresh fails, and is remembered
    finished = timezone.now()
    BackupRecord.objects.create(
        started_at=finished, finished_at=finished, status="succeeded", filename="b.gz"
    )

    _, cached, _ = get_json(client, "/health/")
    time.sleep(1.1)
    _, fresh, _ = get_json(client, "/health/")

    assert cached["BackupFresh()"] == "Unavailable: no backup found"
    assert fresh["BackupFresh()"] == "OK"


# --------------------------------------------------------------------------- concurrency


@dataclasses.dataclass
class MeetsAnother(HealthCheck):
    """Passes only when another check runs at the same time: both must reach the barrier."""

    name: str
    barrier: threading.Barrier = dataclasses.field(repr=False)

    def run(self):
        try:
            self.barrier.wait(timeout=3)
        except threading.BrokenBarrierError:
            raise ServiceUnavailable("ran alone") from None


@dataclasses.dataclass
class Hangs(HealthCheck):
    """Hangs like a query on a frozen server, until the test releases it."""

    name: str
    release: threading.Event = dataclasses.field(repr=False)
    runs: list = dataclasses.field(repr=False, default_factory=list)
    timeout = timedelta(seconds=20)

    def run(self):
        self.runs.append(time.monotonic())
        self.release.wait(timeout=60)


@dataclasses.dataclass
class Passes(HealthCheck):
    def run(self):
        pass


def probe(rf, *checks):
    response = DbopsHealthView.as_view(checks=list(checks))(rf.get("/health/?format=json"))
    return response.status_code, json.loads(response.content)


def test_the_checks_of_a_probe_run_at_the_same_time(rf, health_settings):
    barrier = threading.Barrier(2)

    status, body = probe(
        rf,
        (MeetsAnother, {"name": "first", "barrier": barrier}),
        (MeetsAnother, {"name": "second", "barrier": barrier}),
    )

    assert body == {"MeetsAnother(name='first')": "OK", "MeetsAnother(name='second')": "OK"}
    assert status == 200


def test_a_check_that_hangs_is_reported_as_timed_out_at_the_deadline(rf, health_settings):
    health_settings.DBOPS_HEALTH_DEADLINE_SECONDS = 1
    release = threading.Event()
    try:
        started = time.monotonic()
        status, body = probe(rf, (Hangs, {"name": "deadline", "release": release}), Passes)
        waited = time.monotonic() - started
    finally:
        release.set()

    assert body == {"Hangs(name='deadline')": "Unavailable: Timed out after 1 s", "Passes()": "OK"}
    assert status == 500
    assert waited < 10  # bounds the hang: the check's own timeout is 20 s


def test_a_check_still_running_from_an_earlier_probe_is_not_started_again(rf, health_settings):
    health_settings.DBOPS_HEALTH_DEADLINE_SECONDS = 1
    release, runs = threading.Event(), []
    hangs = (Hangs, {"name": "pile-up", "release": release, "runs": runs})
    try:
        while_hung = [probe(rf, hangs) for _ in range(3)]
    finally:
        release.set()
    after = probe(rf, hangs)

    assert [status for status, _ in while_hung] == [500, 500, 500]
    assert after == (200, {"Hangs(name='pile-up')": "OK"})
    # The hung run served all three probes; the fourth shared it or, if it came after that
    # run had ended, started one more. Runs queued behind a hung one would add three.
    assert len(runs) in (1, 2)


def test_wal_archiving_off_is_reported_as_off_and_no_standby_is_checked(client, health_settings):
    with connection.cursor() as cursor:
        cursor.execute("SHOW archive_mode")
        assert cursor.fetchone()[0] == "off"  # the suite's server does not archive

    status, body, _ = get_json(client, "/health/", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert status == 200
    assert body["WalArchiving(alias='default')"] == "OK"
    assert body["details"]["wal_archiving"] == {"archive_mode": "off"}
    assert (
        not any(key.startswith("ReplicaLag") for key in body) and "replica" not in body["details"]
    )
