"""The database system checks, against real connections (PostgreSQL and SQLite files).

The extra connections are opened under `django_db` only because pytest-django blocks every
connection outside it.
"""

import pytest
from django.db import connection, connections

from dbops.checks import check_databases, database_problems


def wrapper_like_default(**overrides):
    """A real, separate connection built from the test database's settings."""
    settings_dict = {**connection.settings_dict, **overrides}
    return connections["default"].__class__(settings_dict, alias="probe")


def sqlite_wrapper(path):
    from django.db.backends.sqlite3.base import DatabaseWrapper

    settings_dict = {**connection.settings_dict, "ENGINE": "django.db.backends.sqlite3"}
    settings_dict.update(NAME=str(path), OPTIONS={}, USER="", PASSWORD="", HOST="", PORT="")
    return DatabaseWrapper(settings_dict, alias="sqlite-probe")


@pytest.mark.django_db
def test_a_reachable_postgresql_database_has_no_problems_in_production():
    assert database_problems(connection, "production") == []


@pytest.mark.django_db
def test_an_unreachable_database_is_e001_with_the_error_class_but_no_host_or_password():
    unreachable = wrapper_like_default(HOST="127.0.0.1", PORT=1, PASSWORD="SECRETPW")

    problems = database_problems(unreachable, "production")

    assert [p.id for p in problems] == ["dbops.E001"]
    message = problems[0].msg + problems[0].hint
    assert "OperationalError" in message
    assert "SECRETPW" not in message
    assert "127.0.0.1" not in message
    assert ":1" not in message


@pytest.mark.django_db
def test_production_on_sqlite_is_e002(tmp_path):
    problems = database_problems(sqlite_wrapper(tmp_path / "prod.sqlite3"), "production")

    assert [p.id for p in problems] == ["dbops.E002"]


@pytest.mark.django_db
def test_sqlite_in_development_is_the_w001_warning(tmp_path):
    problems = database_problems(sqlite_wrapper(tmp_path / "dev.sqlite3"), "development")

    assert [p.id for p in problems] == ["dbops.W001"]
    assert not problems[0].is_serious()


def test_the_check_does_nothing_when_django_asks_without_databases():
    assert check_databases(databases=None) == []


def test_check_database_default_runs_the_registered_check_and_plain_check_does_not(
    manage, tmp_path
):
    development = {"CALORIA_ENV": "development", "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3"}

    with_database = manage("check", "--database", "default", **development)
    without = manage("check", **development)

    assert with_database.returncode == 0, with_database.output
    assert "dbops.W001" in with_database.stderr
    assert without.returncode == 0, without.output
    assert "dbops.W001" not in without.output
    assert "System check identified no issues" in without.stdout


def test_check_and_migrate_fail_with_e001_when_the_database_is_down(
    manage, unreachable_database_url
):
    for command in (["check", "--database", "default"], ["migrate", "--noinput"]):
        completed = manage(
            *command, CALORIA_ENV="development", DATABASE_URL=unreachable_database_url
        )

        assert completed.returncode == 1, command
        assert "dbops.E001" in completed.stderr, command
        assert "SECRETPW" not in completed.output
