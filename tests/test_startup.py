"""Start-up: the WSGI application refuses to serve production without its PostgreSQL, and
runserver names the database it serves (or stops cleanly when there is none)."""

import re
import subprocess
import sys
import time

import pytest

from tests.conftest import PROJECT_ROOT, STRONG_SECRET_KEY, clean_environment, closed_port

IMPORT_WSGI = "import caloria.wsgi; print('wsgi application loaded')"


def production(database_url, **overrides):
    return {
        "CALORIA_ENV": "production",
        "SECRET_KEY": STRONG_SECRET_KEY,
        "ALLOWED_HOSTS": "caloria.example.com",
        "DATABASE_URL": database_url,
        **overrides,
    }


def test_wsgi_refuses_to_start_in_production_when_the_database_is_unreachable(
    run, unreachable_database_url
):
    started = time.monotonic()
    completed = run([sys.executable, "-c", IMPORT_WSGI], **production(unreachable_database_url))

    assert time.monotonic() - started < 10
    assert completed.returncode != 0
    assert "wsgi application loaded" not in completed.stdout
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("caloria: refusing to start: dbops.E001")
    assert "SECRETPW" not in completed.output


def test_wsgi_refuses_to_start_in_production_on_sqlite(run, tmp_path):
    completed = run(
        [sys.executable, "-c", IMPORT_WSGI],
        **production(f"sqlite:///{tmp_path}/prod.sqlite3"),
    )

    assert completed.returncode != 0
    assert "production needs PostgreSQL" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.django_db
def test_wsgi_starts_in_production_when_postgresql_answers(run, test_database_url):
    completed = run([sys.executable, "-c", IMPORT_WSGI], **production(test_database_url))

    assert completed.returncode == 0, completed.stderr
    assert "wsgi application loaded" in completed.stdout


def test_the_issue_example_exits_non_zero_quickly_without_leaking_the_password(run, manage):
    """The acceptance example: no ALLOWED_HOSTS, a strong key, and a dead port 1."""
    variables = {
        "CALORIA_ENV": "production",
        "SECRET_KEY": STRONG_SECRET_KEY,
        "DATABASE_URL": "postgres://caloria:SECRETPW@127.0.0.1:1/caloria",
    }
    started = time.monotonic()
    validated = manage("validate_environment", **variables)
    wsgi = run([sys.executable, "-c", IMPORT_WSGI], **variables)

    assert time.monotonic() - started < 10
    assert validated.returncode == 1
    assert "failed   connection: unreachable (OperationalError)" in validated.stdout
    assert wsgi.returncode != 0
    assert "ALLOWED_HOSTS: is required but not set" in wsgi.stderr
    for completed in (validated, wsgi):
        assert "SECRETPW" not in completed.output
        assert "Traceback" not in completed.output


def start_runserver(port, **variables):
    return subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=PROJECT_ROOT,
        env=clean_environment(**variables),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.django_db
def test_runserver_prints_one_banner_line_with_the_password_masked(password_database_url, env_file):
    url, password = password_database_url
    server = start_runserver(closed_port(), DATABASE_URL=url, CALORIA_ENV_FILE=str(env_file))
    try:
        first_line = server.stdout.readline().strip()
    finally:
        server.terminate()
        server.communicate(timeout=10)

    from django.db import connection

    settings_dict = connection.settings_dict
    assert re.match(r"Database: postgresql \d+\.\d+ ", first_line), first_line
    assert f"{settings_dict['HOST']}:{settings_dict['PORT']}/{settings_dict['NAME']}" in first_line
    assert f"user={settings_dict['USER']} password=********" in first_line
    assert password not in first_line


def test_runserver_with_the_database_down_prints_a_clear_error_instead_of_a_traceback(
    manage, unreachable_database_url
):
    completed = manage(
        "runserver", "--noreload", f"127.0.0.1:{closed_port()}",
        DATABASE_URL=unreachable_database_url, timeout=20,
    )  # fmt: skip

    assert completed.returncode == 1
    assert "Database 'default' is unreachable (OperationalError)" in completed.stderr
    assert "Traceback" not in completed.output
    assert "SECRETPW" not in completed.output
