"""/metrics when the database goes away: it still answers, within the health deadline, and
says so in `dbops_database_up` and `dbops_history_up`, never in error text."""

import subprocess
import sys
import threading
import time

import pytest
from django.db import connection, connections, transaction
from prometheus_client.parser import text_string_to_metric_families

from dbops import metrics
from tests.conftest import PROJECT_ROOT, clean_environment, closed_port, database_url
from tests.faults.test_health_faults import fetch, wait_for_server
from tests.tcp_proxy import TcpProxy

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fresh_health_results"),
]

TOKEN = "metrics-token-" + "f4ult" * 5
PASSWORD = "pw-" + "n0tpr1nt3d" * 3


def values(body: str) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if not sample.labels
    }


def scrape_until(url: str, name: str, value: float, within: float = 10):
    deadline = time.monotonic() + within
    while True:
        status, body, _ = fetch(url, Authorization=f"Bearer {TOKEN}", Accept="text/plain")
        if values(body).get(name) == value or time.monotonic() > deadline:
            return status, body
        time.sleep(0.2)


def test_metrics_answer_while_the_database_is_away_and_recover(tmp_path):
    settings_dict = connection.settings_dict
    proxy = TcpProxy(settings_dict["HOST"] or "127.0.0.1", int(settings_dict["PORT"] or 5432))
    env_file = tmp_path / "proxy.env"
    env_file.write_text("")
    port = closed_port()
    url = database_url(settings_dict, HOST="127.0.0.1", PORT=proxy.port, PASSWORD=PASSWORD)
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=PROJECT_ROOT,
        env=clean_environment(
            CALORIA_ENV="test",
            CALORIA_ENV_FILE=str(env_file),
            DATABASE_URL=url,
            DATABASE_CONNECT_TIMEOUT="2",
            DBOPS_BACKUP_DIR=str(tmp_path),
            METRICS_TOKEN=TOKEN,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_for_server(f"http://127.0.0.1:{port}/health/live/", server)
        up = scrape_until(metrics, "dbops_database_up", 1)
        proxy.cut()
        down = scrape_until(metrics, "dbops_database_up", 0)
        proxy.restore()
        back = scrape_until(metrics, "dbops_history_up", 1)
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=10)
        proxy.close()

    assert up[0] == 200 and values(up[1])["dbops_history_up"] == 1
    assert down[0] == 200
    assert values(down[1])["dbops_database_up"] == 0
    assert values(down[1])["dbops_history_up"] == 0
    assert "dbops_backup_last_success_timestamp_seconds" not in down[1]
    assert 'dbops_health_check_up{check="DatabaseReachable"} 0.0' in down[1]
    assert PASSWORD not in down[1] and "127.0.0.1" not in down[1]
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=down[1], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert back[0] == 200 and values(back[1])["dbops_database_up"] == 1
    assert "Traceback" not in stderr
    assert PASSWORD not in stderr


LOCK_SECONDS = 1.5


def hold_migrations_table_locked(seconds: float) -> threading.Thread:
    """Lock django_migrations from a connection of another thread for `seconds`, so that
    MigrationsApplied's query waits that long; returns once the lock is held."""
    held = threading.Event()

    def hold():
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("LOCK TABLE django_migrations IN ACCESS EXCLUSIVE MODE")
                held.set()
                time.sleep(seconds)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(10), "could not lock django_migrations"
    return holder


def test_a_slow_check_s_duration_is_its_own_and_not_the_later_checks(client, settings):
    """Checks are collected one after another: a check reported after a slow one must still
    report its own time, not the time until it was collected."""
    settings.DBOPS_HEALTH_CACHE_SECONDS = 0
    settings.DBOPS_METRICS_TOKEN = TOKEN
    metrics.forget_cache()
    holder = hold_migrations_table_locked(LOCK_SECONDS)

    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    metrics.forget_cache()
    holder.join(10)

    assert response.status_code == 200

    durations = {
        sample.labels["check"]: sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
        if sample.name == "dbops_health_check_duration_seconds"
    }
    assert durations["MigrationsApplied"] >= LOCK_SECONDS / 2, durations
    # Collected after MigrationsApplied, and quick: a disk-usage call, a setting read.
    for later in ("BackupFresh", "BackupDiskSpace"):
        assert durations[later] < LOCK_SECONDS / 2, durations
