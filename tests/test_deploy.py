"""Production serving: gunicorn, WhiteNoise, `check --deploy`, and refusal to start."""

import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import PROJECT_ROOT, STRONG_SECRET_KEY, clean_environment, closed_port

GUNICORN = str(PROJECT_ROOT / ".venv" / "bin" / "gunicorn")


def production(database_url, **overrides):
    return {
        "CALORIA_ENV": "production",
        "SECRET_KEY": STRONG_SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": database_url,
        **overrides,
    }


def test_check_deploy_is_clean_under_production_settings(manage):
    completed = manage(
        "check", "--deploy", "--fail-level", "WARNING",
        **production("postgres://caloria:SECRETPW@127.0.0.1:5432/caloria"),
    )  # fmt: skip

    assert completed.returncode == 0, completed.output
    assert "no issues" in completed.stdout


def test_gunicorn_refuses_to_start_in_production_when_the_database_is_down(
    run, unreachable_database_url
):
    started = time.monotonic()
    completed = run(
        [GUNICORN, "caloria.wsgi:application", "-c", "gunicorn.conf.py",
         "--bind", f"127.0.0.1:{closed_port()}"],
        timeout=30, **production(unreachable_database_url),
    )  # fmt: skip

    assert time.monotonic() - started < 10
    assert completed.returncode != 0
    refusals = [line for line in completed.stderr.splitlines() if "refusing to start" in line]
    assert refusals == [
        "caloria: refusing to start: dbops.E001 Database 'default' is unreachable "
        "(OperationalError). Run 'manage.py validate_environment' for details."
    ]
    assert "SECRETPW" not in completed.output
    assert "Traceback" not in completed.stderr


def test_gunicorn_refuses_an_unparseable_database_url_without_printing_its_password(run):
    completed = run(
        [GUNICORN, "caloria.wsgi:application", "-c", "gunicorn.conf.py",
         "--bind", f"127.0.0.1:{closed_port()}"],
        timeout=30, **production("postgres://caloria:SECRETPW/x@127.0.0.1/caloria"),
    )  # fmt: skip

    assert completed.returncode != 0
    assert "DATABASE_URL: cannot be parsed as a database URL" in completed.stderr
    assert "caloria:********@127.0.0.1/caloria" in completed.stderr
    assert "SECRETPW" not in completed.output
    assert "Traceback" not in completed.stderr


def fetch(url, **headers):
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.mark.django_db
def test_gunicorn_serves_the_admin_static_files_and_plain_http_health_in_production(
    run, test_database_url, tmp_path, env_file
):
    variables = production(
        test_database_url, STATIC_ROOT=str(tmp_path / "static"), SECURE_PROXY_SSL_HEADER="true"
    )
    collected = run([sys.executable, "manage.py", "collectstatic", "--noinput"], **variables)
    assert collected.returncode == 0, collected.stderr
    port = closed_port()
    server = subprocess.Popen(
        [GUNICORN, "caloria.wsgi:application", "-c", "gunicorn.conf.py",
         "--bind", f"127.0.0.1:{port}"],
        cwd=PROJECT_ROOT,
        env=clean_environment(
            CALORIA_ENV_FILE=str(env_file), DBOPS_BACKUP_DIR=str(tmp_path), **variables
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                live = fetch(f"http://127.0.0.1:{port}/health/live/")
                break
            except OSError:
                assert server.poll() is None, server.communicate()[1]
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)
        css = fetch(
            f"http://127.0.0.1:{port}/static/admin/css/base.css", **{"X-Forwarded-Proto": "https"}
        )
        admin = fetch(f"http://127.0.0.1:{port}/admin/")
    finally:
        server.terminate()
        server.communicate(timeout=30)

    assert live[0] == 200
    assert css[0] == 200
    assert b"body" in css[2]
    assert admin[0] == 301
    assert admin[1]["Location"].startswith("https://")
