"""Health endpoints when the database fails: it goes away, or it hangs.

Each test serves the project in a child process (runserver or gunicorn) against a database
that the test can take away: the shared server through a TCP proxy it cuts, or a throwaway
cluster it freezes with SIGSTOP.
"""

import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from django.db import connection

from tests.conftest import PROJECT_ROOT, clean_environment, closed_port, database_url
from tests.tcp_proxy import TcpProxy

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fresh_health_results"),
]


def fetch(url: str, timeout: float = 15) -> tuple[int, str, float]:
    started = time.monotonic()
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read().decode()
    return status, body, time.monotonic() - started


def fetch_until(url: str, status: int, within: float = 5) -> tuple[int, str, float]:
    """Probe until the status appears; the time reported is since the first probe."""
    started = time.monotonic()
    while True:
        result = fetch(url)
        if result[0] == status or time.monotonic() - started > within:
            return result[0], result[1], time.monotonic() - started
        time.sleep(0.1)


def wait_for_server(url: str, process, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.communicate()[1])
        try:
            fetch(url, timeout=2)
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the server did not start")


def test_the_probe_goes_unhealthy_when_the_database_goes_away_and_recovers_without_restart(
    tmp_path,
):
    settings_dict = connection.settings_dict
    proxy = TcpProxy(settings_dict["HOST"] or "127.0.0.1", int(settings_dict["PORT"] or 5432))
    env_file = tmp_path / "proxy.env"
    env_file.write_text("")
    port = closed_port()
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=PROJECT_ROOT,
        env=clean_environment(
            CALORIA_ENV="test",
            CALORIA_ENV_FILE=str(env_file),
            DATABASE_URL=database_url(settings_dict, HOST="127.0.0.1", PORT=proxy.port),
            DATABASE_CONNECT_TIMEOUT="2",
            DBOPS_BACKUP_DIR=str(tmp_path),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/health/database/"
    try:
        wait_for_server(url, server)
        healthy = fetch(url)
        proxy.cut()
        first_down = fetch_until(url, 500)
        down = [fetch(url) for _ in range(3)]
        proxy.restore()
        back = fetch_until(url, 200)
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=10)
        proxy.close()

    assert healthy[0] == 200
    # Results are reused for up to a second (DBOPS_HEALTH_CACHE_SECONDS), then the outage
    # shows, each probe answering within the check's timeout.
    assert first_down[0] == 500 and first_down[2] < 5
    for status, body, seconds in down:
        assert status == 500
        assert "Unavailable: database unreachable" in body
        assert seconds < 5
        assert str(proxy.port) not in body
    assert back[0] == 200, back
    assert "Traceback" not in stderr
