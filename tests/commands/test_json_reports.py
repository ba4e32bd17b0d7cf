"""The one `--json [FILE]` convention of validate_environment, check_consistency and
import_sqlite (README, "Operations"), run as cron and scripts run them: in child processes.

No FILE (or `-`): the report on stdout and nothing else there. FILE: the report written there,
the usual lines on stdout. Every report is an object whose first key is the boolean "ok",
true exactly when the exit code is 0, and a command that fails still writes one.
"""

import json

import pytest

# The child processes reach the test database through its URL; the mark makes it the test's.
pytestmark = pytest.mark.django_db


def commands(source):
    """Each command with --json, as a test database run of it (import_sqlite: a dry run)."""
    return {
        "validate_environment": ["validate_environment"],
        "check_consistency": ["check_consistency"],
        "import_sqlite": ["import_sqlite", str(source), "--dry-run"],
    }


@pytest.fixture
def in_test_database(test_database_url):
    return {"CALORIA_ENV": "test", "DATABASE_URL": test_database_url}


@pytest.mark.parametrize("name", ["validate_environment", "check_consistency", "import_sqlite"])
@pytest.mark.parametrize("json_argument", [["--json"], ["--json", "-"]], ids=["bare", "dash"])
def test_the_report_alone_is_on_stdout_with_ok_first(
    manage, in_test_database, filled_source, name, json_argument
):
    completed = manage(*commands(filled_source)[name], *json_argument, **in_test_database)

    assert completed.returncode == 0, completed.output
    report = json.loads(completed.stdout)  # fails on any other line
    assert next(iter(report)) == "ok"
    assert report["ok"] is True


@pytest.mark.parametrize(
    "name, line",
    [
        ("validate_environment", "Environment check (CALORIA_ENV=test)"),
        ("check_consistency", "check_consistency: no findings"),
        ("import_sqlite", "Dry run: preflight passed for"),
    ],
)
def test_a_report_file_is_written_and_the_usual_lines_still_print(
    manage, in_test_database, filled_source, tmp_path, name, line
):
    path = tmp_path / "report.json"

    completed = manage(*commands(filled_source)[name], "--json", str(path), **in_test_database)

    assert completed.returncode == 0, completed.output
    assert line in completed.stdout
    report = json.loads(path.read_text())
    assert next(iter(report)) == "ok"
    assert report["ok"] is True


def test_import_sqlite_keeps_every_key_of_its_report_beside_ok(
    manage, in_test_database, filled_source
):
    completed = manage(*commands(filled_source)["import_sqlite"], "--json", **in_test_database)

    assert completed.returncode == 0, completed.output
    report = json.loads(completed.stdout)
    assert list(report) == [
        "ok", "status", "source", "snapshot", "snapshot_sha256", "database", "seconds",
        "tables", "mapping", "skipped_tables", "total_rows", "problems",
    ]  # fmt: skip
    assert (report["ok"], report["status"]) == (True, "dry-run passed")


@pytest.mark.parametrize("name", ["check_consistency", "import_sqlite"])
def test_a_run_that_fails_replaces_an_earlier_report_with_one_that_is_not_ok(
    manage, unreachable_database_url, filled_source, tmp_path, name
):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"ok": True}))  # yesterday's

    completed = manage(
        *commands(filled_source)[name], "--json", str(path),
        CALORIA_ENV="test", DATABASE_URL=unreachable_database_url,
    )  # fmt: skip

    assert completed.returncode == 1, completed.output
    report = json.loads(path.read_text())
    assert report["ok"] is False
    why = report["error"] if name == "check_consistency" else " ".join(report["problems"])
    assert "Connection refused" in why
    assert "SECRETPW" not in path.read_text() + completed.output


def test_validate_environment_reports_a_failed_check_as_not_ok(manage, unreachable_database_url):
    completed = manage(
        "validate_environment", "--json", CALORIA_ENV="test", DATABASE_URL=unreachable_database_url
    )

    assert completed.returncode == 1
    report = json.loads(completed.stdout)
    assert report["ok"] is False
    assert {"name": "connection", "status": "failed"}.items() <= next(
        check for check in report["checks"] if check["name"] == "connection"
    ).items()
