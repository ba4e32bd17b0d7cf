"""dbops' configuration checks (dbops.E003-E013, W002), each seen by its id in `check` output.

Each test runs `python -m django check` in a child process with a project of dbops alone
(tests/minimal_settings.py) changed in one way, so a check that is not registered, or no
longer fires, fails its test. Plain `check` opens no database connection.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import PROJECT_ROOT
from tests.minimal_project import PSYCOPG3_PYTHON, run_django, write_variant

CHECK_IDS = re.compile(r"\(dbops\.[EW]\d{3}\)")


@pytest.fixture
def backup_dir(tmp_path):
    directory = tmp_path / "backups"
    directory.mkdir(mode=0o700)
    return directory


@pytest.fixture
def check(tmp_path, backup_dir):
    """`check` in a project of dbops alone with `changes` to its settings; returns the
    completed process and the dbops ids it reported."""

    def run_check(changes: str = "", *args: str):
        module = write_variant(tmp_path, changes)
        completed = run_django(
            "check", *args, backup_dir=backup_dir, settings_module=module, pythonpath=tmp_path
        )
        assert "Traceback" not in completed.stderr, completed.output
        return completed, [found.strip("()") for found in CHECK_IDS.findall(completed.stderr)]

    return run_check


def test_a_project_of_dbops_alone_passes_every_check(check):
    completed, ids = check()

    assert completed.returncode == 0, completed.output
    assert ids == []
    assert "System check identified no issues" in completed.stdout


def test_no_dbbackup_storage_is_e003(check):
    completed, ids = check('STORAGES = {k: v for k, v in STORAGES.items() if k != "dbbackup"}')

    assert completed.returncode == 1
    assert ids == ["dbops.E003"]
    assert 'STORAGES["dbbackup"] is not set' in completed.stderr
    assert "HINT:" in completed.stderr


def test_a_backup_location_inside_media_root_is_e004(check, backup_dir):
    completed, ids = check(f"MEDIA_ROOT = {str(backup_dir.parent)!r}")

    assert completed.returncode == 1
    assert ids == ["dbops.E004"]
    assert f"is inside MEDIA_ROOT ({backup_dir.parent})" in completed.stderr


def test_a_backup_location_that_is_static_root_is_e004(check, backup_dir):
    completed, ids = check(f"STATIC_ROOT = {str(backup_dir)!r}")

    assert completed.returncode == 1
    assert ids == ["dbops.E004"]
    assert "is inside STATIC_ROOT" in completed.stderr


def test_a_filesystem_storage_without_location_lands_in_media_root_and_is_e004(check, tmp_path):
    completed, ids = check(
        f"""
        MEDIA_ROOT = {str(tmp_path / "media")!r}
        STORAGES = {{**STORAGES, "dbbackup": {{
            "BACKEND": "django.core.files.storage.FileSystemStorage"}}}}
        """
    )

    assert completed.returncode == 1
    assert ids == ["dbops.E004"]


def test_a_backup_location_that_is_the_current_directory_is_e005(check):
    completed, ids = check(
        f'STORAGES["dbbackup"] = {{**STORAGES["dbbackup"], "OPTIONS": '
        f'{{"location": {str(PROJECT_ROOT)!r}}}}}'
    )

    assert completed.returncode == 1
    assert ids == ["dbops.E005"]
    assert "is the current directory" in completed.stderr


def test_a_relative_backup_location_is_e005(check):
    completed, ids = check(
        'STORAGES["dbbackup"] = {**STORAGES["dbbackup"], "OPTIONS": {"location": "backups"}}'
    )

    assert completed.returncode == 1
    assert ids == ["dbops.E005"]
    assert "relative location 'backups'" in completed.stderr


def test_a_storage_that_is_no_local_directory_needs_dbops_backup_dir_e006(check, backup_dir):
    in_memory = 'STORAGES["dbbackup"] = {"BACKEND": "django.core.files.storage.InMemoryStorage"}\n'

    without, without_ids = check(in_memory)
    with_dir, with_dir_ids = check(in_memory + f"DBOPS_BACKUP_DIR = {str(backup_dir)!r}\n")

    assert without.returncode == 1
    assert without_ids == ["dbops.E006"]
    assert "DBOPS_BACKUP_DIR is not set" in without.stderr
    assert with_dir.returncode == 0, with_dir.output
    assert with_dir_ids == []


def test_a_backup_dir_that_is_not_the_storage_location_is_e007(check, tmp_path, backup_dir):
    elsewhere = tmp_path / "elsewhere"

    completed, ids = check(f"DBOPS_BACKUP_DIR = {str(elsewhere)!r}")
    same, same_ids = check(f"DBOPS_BACKUP_DIR = {str(backup_dir)!r}")

    assert completed.returncode == 1
    assert ids == ["dbops.E007"]
    assert f"DBOPS_BACKUP_DIR ({elsewhere}) is not the directory" in completed.stderr
    assert same.returncode == 0, same.output
    assert same_ids == []


def test_dbbackup_before_dbops_is_e008(check):
    completed, ids = check(
        'INSTALLED_APPS = ["dbbackup", *(app for app in INSTALLED_APPS if app != "dbbackup")]'
    )

    assert completed.returncode == 1
    assert ids == ["dbops.E008"]
    assert "must list 'dbbackup' after 'dbops'" in completed.stderr


def test_dbbackup_missing_is_e008(check):
    completed, ids = check('INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "dbbackup"]')

    assert completed.returncode == 1
    assert ids == ["dbops.E008"]


def test_health_check_missing_is_e009(check):
    completed, ids = check(
        'INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "health_check"]'
    )

    assert completed.returncode == 1
    assert ids == ["dbops.E009"]


def test_a_replica_database_that_names_no_standby_alias_is_e013(check):
    missing, missing_ids = check('DBOPS_REPLICA_DATABASE = "standby_db"')
    default, default_ids = check('DBOPS_REPLICA_DATABASE = "default"')
    standby, standby_ids = check(
        'DATABASES = {**DATABASES, "replica": {**DATABASES["default"], "TEST": {"MIRROR": '
        '"default"}}}\nDBOPS_REPLICA_DATABASE = "replica"'
    )

    assert missing.returncode == 1 and missing_ids == ["dbops.E013"]
    assert "DBOPS_REPLICA_DATABASE is 'standby_db'" in missing.stderr
    assert default.returncode == 1 and default_ids == ["dbops.E013"]
    assert standby.returncode == 0 and standby_ids == [], standby.output


def test_sqlite_is_a_warning_by_default_and_an_error_when_the_project_says_production(
    check, tmp_path
):
    sqlite = f"""
        DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3",
                                   "NAME": {str(tmp_path / "db.sqlite3")!r}}}}}
        """

    by_default, default_ids = check(sqlite, "--database", "default")
    production, production_ids = check(
        sqlite + 'DBOPS_ENVIRONMENT = "production"\n', "--database", "default"
    )

    assert by_default.returncode == 0, by_default.output
    assert default_ids == ["dbops.W001"]
    assert production.returncode == 1
    assert production_ids == ["dbops.E002"]


def test_psycopg3_behind_a_pooler_is_e012_only_when_the_project_turns_prepared_statements_on(
    tmp_path, backup_dir
):
    """Django never prepares on psycopg 3 unless OPTIONS sets prepare_threshold, so a pooled
    project that leaves it unset is fine; one that sets psycopg's 5 is not."""
    pooled = (
        'DBOPS_POOLER = "pgbouncer"\nDATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True'
    )
    outcomes = {}
    for name, changes in {
        "unset": pooled,
        "five": pooled + '\nDATABASES["default"]["OPTIONS"] = {"prepare_threshold": 5}',
    }.items():
        folder = tmp_path / name
        folder.mkdir()
        completed = run_django(
            "check", backup_dir=backup_dir, settings_module=write_variant(folder, changes),
            pythonpath=folder, interpreter=PSYCOPG3_PYTHON,
        )  # fmt: skip
        assert "Traceback" not in completed.stderr, completed.output
        outcomes[name] = completed

    assert outcomes["unset"].returncode == 0, outcomes["unset"].output
    assert "dbops.E012" not in outcomes["unset"].stderr
    assert outcomes["five"].returncode == 1
    assert "dbops.E012" in outcomes["five"].stderr
    assert "psycopg 3 prepares statements" in outcomes["five"].stderr


@pytest.mark.parametrize(
    "url, reason",
    [
        ("hc-ping.com/5a3b9c1e-secret-uuid", "not an http:// or https:// URL"),
        ("ftp://hc-ping.com/5a3b9c1e-secret-uuid", "not an http:// or https:// URL"),
        ("https:///5a3b9c1e-secret-uuid", "no host in the URL"),
        ("https://hc-ping.com:port/5a3b9c1e-secret-uuid", "not a URL"),
    ],
)
def test_a_ping_url_that_cannot_be_pinged_is_w002_naming_the_setting_not_the_url(
    check, url, reason
):
    backup, backup_ids = check(f"DBOPS_BACKUP_PING_URL = {url!r}")
    consistency, consistency_ids = check(f"DBOPS_CONSISTENCY_PING_URL = {url!r}")

    assert backup.returncode == 0 and backup_ids == ["dbops.W002"], backup.output
    assert f"DBOPS_BACKUP_PING_URL is set but cannot be pinged ({reason})" in backup.stderr
    assert consistency.returncode == 0 and consistency_ids == ["dbops.W002"]
    assert "DBOPS_CONSISTENCY_PING_URL is set" in consistency.stderr
    assert "secret-uuid" not in backup.output + consistency.output


def test_a_full_ping_url_is_no_warning(check):
    completed, ids = check(
        'DBOPS_BACKUP_PING_URL = "https://hc-ping.com/uuid"\n'
        'DBOPS_CONSISTENCY_PING_URL = "http://127.0.0.1:8000/ping/uuid"'
    )

    assert completed.returncode == 0 and ids == [], completed.output
