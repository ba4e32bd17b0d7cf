"""validate_environment: one line per check, a hint for each failure, JSON, exit codes."""

import json
import shutil
import time

import pytest
from django.db import connection

from tests.conftest import STRONG_SECRET_KEY, database_url


def production(database_url, **overrides):
    return {
        "CALORIA_ENV": "production",
        "SECRET_KEY": STRONG_SECRET_KEY,
        "ALLOWED_HOSTS": "caloria.example.com",
        "DATABASE_URL": database_url,
        **overrides,
    }


def statuses(completed):
    report = json.loads(completed.stdout)
    return {check["name"]: check["status"] for check in report["checks"]}, report


@pytest.mark.django_db
def test_everything_passes_against_the_migrated_postgresql_database(
    manage, env_file, password_database_url
):
    url, password = password_database_url
    env_file.write_text(f"DATABASE_URL={url}\n")
    variables = production(url)
    del variables["DATABASE_URL"]

    completed = manage("validate_environment", **variables)

    assert completed.returncode == 0, completed.output
    lines = completed.stdout.splitlines()
    assert f"  passed   .env file: read {env_file}" in lines
    assert "  passed   DATABASE_URL: set in the .env file" in lines
    assert "  passed   SECRET_KEY: set in the process environment" in lines
    assert "  passed   migrations: all applied" in " ".join(lines)
    assert any(line.startswith("  passed   pg_dump: ") for line in lines)
    assert any(line.startswith("  passed   pg_restore: ") for line in lines)
    assert any(line.startswith("  passed   backup directory: ") for line in lines)
    assert "0 failed" in lines[-1]
    assert password not in completed.output
    assert STRONG_SECRET_KEY not in completed.output


def test_an_unreachable_database_fails_within_ten_seconds_and_never_shows_the_password(
    manage, unreachable_database_url
):
    started = time.monotonic()
    completed = manage("validate_environment", **production(unreachable_database_url))

    assert time.monotonic() - started < 10
    assert completed.returncode == 1
    assert "failed   connection: unreachable (OperationalError)" in completed.stdout
    assert "hint: Is the server running" in completed.stdout
    assert "skipped  migrations: the database is not reachable" in completed.stdout
    assert "SECRETPW" not in completed.output
    assert "CommandError: 1 of" in completed.stderr


def test_it_reports_configuration_problems_beside_the_database_checks(
    manage, unreachable_database_url
):
    variables = production(unreachable_database_url, SECRET_KEY="short-SECRETPW")
    del variables["ALLOWED_HOSTS"]

    completed = manage("validate_environment", "--json", **variables)

    checks, report = statuses(completed)
    assert completed.returncode == 1
    assert report["ok"] is False
    assert checks["SECRET_KEY"] == "failed"
    assert checks["ALLOWED_HOSTS"] == "failed"
    assert checks["connection"] == "failed"
    assert "SECRETPW" not in completed.output


@pytest.mark.django_db
def test_json_report_lists_every_check(manage, test_database_url):
    completed = manage("validate_environment", "--json", **production(test_database_url))

    checks, report = statuses(completed)
    assert completed.returncode == 0, completed.output
    assert report["ok"] is True
    assert report["environment"] == "production"
    for name in ("connection", "server version", "engine", "migrations", "pg_dump", "pg_restore"):
        assert checks[name] == "passed", name


@pytest.mark.django_db
def test_warnings_fail_only_with_strict(manage, env_file, test_database_url):
    env_file.write_text("ALLOWED_HOSTS=caloria.example.com # public name\n")
    variables = production(test_database_url)
    del variables["ALLOWED_HOSTS"]

    relaxed = manage("validate_environment", **variables)
    strict = manage("validate_environment", "--strict", **variables)

    assert relaxed.returncode == 0, relaxed.output
    assert "warning  .env pitfalls" in relaxed.stdout
    assert "an unquoted ' #' does not start a comment" in relaxed.stdout
    assert strict.returncode == 1


@pytest.mark.django_db
def test_a_dollar_value_that_reads_another_variable_is_flagged(manage, env_file, test_database_url):
    env_file.write_text("SECRET_KEY=$CALORIA_REAL_KEY\n")
    variables = production(test_database_url, CALORIA_REAL_KEY=STRONG_SECRET_KEY)
    del variables["SECRET_KEY"]

    completed = manage("validate_environment", **variables)

    assert "SECRET_KEY: the value starts with '$'" in completed.stdout
    assert STRONG_SECRET_KEY not in completed.output


@pytest.mark.django_db
def test_an_environment_variable_that_overrides_the_env_file_is_a_warning(
    manage, env_file, test_database_url
):
    """The original incident: the .env said one database, the environment another."""
    env_file.write_text("DATABASE_URL=postgres://someone@127.0.0.1:5432/what_the_file_says\n")

    completed = manage("validate_environment", "--json", **production(test_database_url))

    checks, report = statuses(completed)
    assert checks["DATABASE_URL"] == "warning"
    detail = next(c["detail"] for c in report["checks"] if c["name"] == "DATABASE_URL")
    assert "overrides the value in" in detail


@pytest.mark.django_db(transaction=True)
def test_unapplied_migrations_fail_with_the_migrate_hint(manage, test_database_url):
    empty = f"{connection.settings_dict['NAME']}_unmigrated"
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{empty}"')
        cursor.execute(f'CREATE DATABASE "{empty}"')
    try:
        url = test_database_url.rsplit("/", 1)[0] + f"/{empty}"
        completed = manage("validate_environment", **production(url))
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{empty}"')

    assert completed.returncode == 1
    assert "failed   migrations: " in completed.stdout
    assert "hint: Run 'manage.py migrate --database default'." in completed.stdout


@pytest.mark.django_db
def test_an_unwritable_backup_directory_fails(manage, tmp_path, test_database_url):
    not_a_directory = tmp_path / "not-a-directory"
    not_a_directory.write_text("a file where the directory should be")

    completed = manage(
        "validate_environment",
        **production(test_database_url, DBOPS_BACKUP_DIR=str(not_a_directory)),
    )

    assert completed.returncode == 1
    assert f"failed   backup directory: {not_a_directory} is not a directory" in completed.stdout


def test_development_on_sqlite_warns_and_says_where_the_file_is(manage, tmp_path):
    completed = manage("validate_environment", "--json", CALORIA_ENV="development")

    checks, report = statuses(completed)
    assert checks["DATABASE_URL"] == "warning"
    assert checks["engine"] in ("warning",)
    detail = next(c["detail"] for c in report["checks"] if c["name"] == "DATABASE_URL")
    assert detail.startswith("not set: development uses SQLite at /")


@pytest.mark.django_db
def test_a_bare_star_in_allowed_hosts_fails_in_production(manage, test_database_url):
    completed = manage(
        "validate_environment", "--json", **production(test_database_url, ALLOWED_HOSTS="*")
    )

    checks, _ = statuses(completed)
    assert completed.returncode == 1
    assert checks["ALLOWED_HOSTS"] == "failed"


@pytest.mark.django_db
def test_a_missing_pg_restore_fails_like_a_missing_pg_dump(manage, tmp_path, test_database_url):
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "pg_dump").symlink_to(shutil.which("pg_dump"))

    completed = manage(
        "validate_environment", "--strict", PATH=str(folder), **production(test_database_url)
    )

    assert completed.returncode == 1
    assert any(line.startswith("  passed   pg_dump: ") for line in completed.stdout.splitlines())
    assert "failed   pg_restore: not found on PATH" in completed.stdout
    assert "hint: Install the PostgreSQL client tools" in completed.stdout
    assert "pg_restore" in completed.stderr.splitlines()[-1]


@pytest.mark.django_db(transaction=True)
def test_a_role_that_cannot_read_django_migrations_gets_a_failed_migrations_line(
    manage, login_role
):
    url = database_url(connection.settings_dict, USER=login_role, PASSWORD="SECRETPW")

    completed = manage("validate_environment", **production(url))

    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    assert "passed   connection: " in completed.stdout
    assert (
        "failed   migrations: cannot read django_migrations: permission denied for table "
        "django_migrations" in completed.stdout
    )
    assert f"hint: Grant {login_role} SELECT on django_migrations" in completed.stdout
    assert "SECRETPW" not in completed.output
    assert completed.stderr.splitlines()[-1].startswith("CommandError: 1 of")


@pytest.mark.django_db
def test_a_backup_directory_others_can_open_is_a_warning_with_the_chmod_to_run(
    manage, tmp_path, test_database_url
):
    directory = tmp_path / "shared-backups"
    directory.mkdir()
    directory.chmod(0o755)
    variables = production(test_database_url, DBOPS_BACKUP_DIR=str(directory))

    relaxed = manage("validate_environment", **variables)
    strict = manage("validate_environment", "--strict", **variables)

    assert relaxed.returncode == 0, relaxed.output
    assert (
        f"warning  backup directory: {directory} is mode 0755: group and others can open it"
        in relaxed.stdout
    )
    assert f"hint: chmod 700 {directory}" in relaxed.stdout
    assert strict.returncode == 1


@pytest.mark.django_db
def test_a_private_backup_directory_passes(manage, tmp_path, test_database_url):
    directory = tmp_path / "private-backups"
    directory.mkdir(mode=0o700)

    completed = manage(
        "validate_environment", **production(test_database_url, DBOPS_BACKUP_DIR=str(directory))
    )

    assert f"passed   backup directory: {directory} is writable, mode 0700" in completed.stdout
