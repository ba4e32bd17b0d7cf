"""A real Prometheus (Debian's) scraping a live gunicorn of the test database: the shipped
alert for a stale backup fires in Prometheus' own API.

Prometheus scrapes and evaluates every second, and the rules' `for:` is set to 0 s in the
test's copy of docs/monitoring/dbops-alerts.yml (thresholds and expressions as shipped).
"""

import json
import subprocess
import time
import urllib.request
from datetime import timedelta

import pytest
import yaml
from django.utils import timezone

from dbops.models import BackupRecord
from tests.conftest import closed_port
from tests.faults.test_health_faults import (
    TOKEN,
    fetch,
    serve_with_gunicorn,
    stop_gunicorn,
    wait_for_server,
)
from tests.test_alert_rules import RULES

pytestmark = pytest.mark.django_db(transaction=True)

WAIT_SECONDS = 60


def immediate_rules(path) -> None:
    """The shipped rules, each firing as soon as its expression is true."""
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            rule["for"] = "0s"
    path.write_text(yaml.safe_dump(document))


def start_prometheus(tmp_path, target: str) -> tuple[subprocess.Popen, str]:
    immediate_rules(tmp_path / "rules.yml")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "scrape_configs": [
            {
                "job_name": "caloria",
                "metrics_path": "/metrics",
                "authorization": {"credentials": TOKEN},
                "static_configs": [{"targets": [target]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = closed_port()
    log = (tmp_path / "prometheus.log").open("w")
    server = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return server, f"http://127.0.0.1:{port}"


def api(base: str, path: str) -> dict:
    with urllib.request.urlopen(f"{base}{path}", timeout=5) as response:
        return json.load(response)["data"]


def wait_until(condition, what: str, log):
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"{what} within {WAIT_SECONDS} s; prometheus said:\n{log.read_text()}")


def firing(base: str, name: str) -> list[dict]:
    return [
        alert
        for alert in api(base, "/api/v1/alerts")["alerts"]
        if alert["labels"]["alertname"] == name and alert["state"] == "firing"
    ]


def test_prometheus_sees_the_backup_go_stale_and_fires_the_alert(test_database_url, tmp_path):
    fresh = timezone.now()
    backup = BackupRecord.objects.create(
        started_at=fresh, finished_at=fresh, status="succeeded", filename="b.psql.gz", size=10
    )
    gunicorn, base = serve_with_gunicorn(test_database_url, tmp_path)
    prometheus = None
    try:
        wait_for_server(f"{base}/health/live/", gunicorn)
        # Both gunicorn workers answer from the database: the same backup, whoever answers.
        stamps = {
            line
            for _ in range(10)
            for line in fetch(f"{base}/metrics", Authorization=f"Bearer {TOKEN}")[1].splitlines()
            if line.startswith("dbops_backup_last_success_timestamp_seconds ")
        }
        assert len(stamps) == 1
        prometheus, prom = start_prometheus(tmp_path, base.removeprefix("http://"))
        log = tmp_path / "prometheus.log"
        query = "/api/v1/query?query=dbops_backup_last_success_timestamp_seconds"
        wait_until(lambda: api_or_none(prom, query), "no scrape of /metrics", log)
        assert not firing(prom, "DbopsBackupTooOld")

        stale = timezone.now() - timedelta(hours=27)
        BackupRecord.objects.filter(pk=backup.pk).update(started_at=stale, finished_at=stale)

        alerts = wait_until(
            lambda: firing(prom, "DbopsBackupTooOld"), "DbopsBackupTooOld did not fire", log
        )
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=30)
        stop_gunicorn(gunicorn)

    assert alerts[0]["labels"]["severity"] == "page"
    assert alerts[0]["labels"]["job"] == "caloria"
    assert alerts[0]["annotations"]["summary"] == "No successful backup for over 26 hours"
    assert float(alerts[0]["value"]) > 26 * 3600


def api_or_none(base: str, path: str):
    try:
        return api(base, path)["result"]
    except OSError:
        return None
