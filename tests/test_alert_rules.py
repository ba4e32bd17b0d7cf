"""The alert rules shipped in docs/monitoring, checked and unit-tested by Debian's promtool,
and written against the metrics /metrics really serves."""

import re
import subprocess

import pytest
import yaml

from tests.conftest import PROJECT_ROOT
from tests.test_metrics import (  # noqa: F401 - fixtures
    fresh_metrics,
    metrics_settings,
    record_history,
    samples,
    scrape,
)

MONITORING = PROJECT_ROOT / "docs" / "monitoring"
RULES = MONITORING / "dbops-alerts.yml"
RULE_TESTS = MONITORING / "dbops-alerts.test.yml"
REQUIRED_ALERTS = {
    "DbopsBackupTooOld",
    "DbopsVerifiedBackupTooOld",
    "DbopsBackupFailed",
    "DbopsDatabaseUnreachable",
    "DbopsMigrationsPending",
    "DbopsConsistencyFindings",
    "DbopsConnectionsNearMax",
    "DbopsScrapeFailed",  # the app down or the token refused: every other series is gone
}


def promtool(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["promtool", *args], cwd=MONITORING, capture_output=True, text=True, timeout=60
    )


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def test_promtool_accepts_the_rules():
    checked = promtool("check", "rules", RULES.name)

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_rules_pass_their_unit_tests():
    tested = promtool("test", "rules", RULE_TESTS.name)

    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_the_issue_asks_for_is_shipped_and_unit_tested():
    shipped = {rule["alert"] for rule in rules()}
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    tested = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }

    assert shipped >= REQUIRED_ALERTS
    assert shipped == tested
    runbook = (PROJECT_ROOT / "docs" / "operations.md").read_text().lower()
    for rule in rules():
        anchor = rule["annotations"]["runbook"].removeprefix("docs/operations.md#")
        assert f"### {anchor}" in runbook, anchor


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fresh_health_results", "fresh_metrics")
def test_every_metric_the_rules_read_is_served(client, metrics_settings):  # noqa: F811
    record_history()
    served = {name for name, _ in samples(scrape(client).content.decode())}

    read = {name for rule in rules() for name in re.findall(r"\bdbops_\w+", rule["expr"])}

    assert read and read <= served, read - served


# --------------------------------------------------------------------------- standby, archiving

REPLICATION_RULES = MONITORING / "dbops-replication-alerts.yml"
REPLICATION_RULE_TESTS = MONITORING / "dbops-replication-alerts.test.yml"
REQUIRED_REPLICATION_ALERTS = {
    "DbopsReplicaDown",
    "DbopsReplicaNotReceiving",
    "DbopsReplicaLagging",
    "DbopsWalArchiveFailing",
}


def test_the_standby_and_archiving_rules_pass_promtool_and_their_unit_tests():
    checked = promtool("check", "rules", REPLICATION_RULES.name)
    tested = promtool("test", "rules", REPLICATION_RULE_TESTS.name)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_standby_and_archiving_alert_is_shipped_unit_tested_and_has_a_runbook():
    shipped = yaml.safe_load(REPLICATION_RULES.read_text())["groups"][0]["rules"]
    tests = yaml.safe_load(REPLICATION_RULE_TESTS.read_text())["tests"]
    tested = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    runbook = (PROJECT_ROOT / "docs" / "operations.md").read_text().lower()

    assert {rule["alert"] for rule in shipped} == REQUIRED_REPLICATION_ALERTS == tested
    for rule in shipped:
        anchor = rule["annotations"]["runbook"].removeprefix("docs/operations.md#")
        assert f"### {anchor}" in runbook, anchor
