"""Health endpoints when the database fails: it goes away, or it hangs.

Each test serves the project in a child process (runserver or gunicorn) against a database
that the test can take away: the shared server through a TCP proxy it cuts, or a throwaway
cluster it freezes with SIGSTOP.
"""

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from django.db import connection

from tests.conftest import (
    PROJECT_ROOT,
    STRONG_SECRET_KEY,
    clean_environment,
    closed_port,
    database_url,
)
from tests.processes import terminate
from tests.tcp_proxy import TcpProxy

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fresh_health_results"),
]


GUNICORN = str(PROJECT_ROOT / ".venv" / "bin" / "gunicorn")
TOKEN = "health-token-" + "t0k3n" * 5
# Defaults the test relies on: DBOPS_HEALTH_DEADLINE_SECONDS and the checks' own timeout.
DEADLINE_SECONDS = 4
DATABASE_CHECKS = {
    "DatabaseReachable(alias='default')": "database unreachable",
    "MigrationsApplied(alias='default')": "migration state unknown",
    "BackupFresh()": "backup history unavailable",
}


def fetch(url: str, timeout: float = 15, **headers: str) -> tuple[int, str, float]:
    started = time.monotonic()
    request = urllib.request.Request(url, headers={"Accept": "application/json", **headers})
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


class Monitor(threading.Thread):
    """Polls a URL as fast as it gets answers, like a monitor gone wild, until stopped."""

    def __init__(self, url: str, **headers: str):
        super().__init__(daemon=True)
        self.url, self.headers = url, headers
        self.answers: list[tuple[int, str, float]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.answers.append(fetch(self.url, timeout=60, **self.headers))

    def stop(self) -> None:
        self.stopped.set()
        if self.is_alive():
            self.join(timeout=60)


def serve_with_gunicorn(database_url: str, tmp_path) -> tuple[subprocess.Popen, str]:
    """gunicorn as deployed (gunicorn.conf.py's defaults, production settings); its URL."""
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    environment = clean_environment(
        CALORIA_ENV="production",
        CALORIA_ENV_FILE=str(env_file),
        SECRET_KEY=STRONG_SECRET_KEY,
        ALLOWED_HOSTS="127.0.0.1",
        DATABASE_URL=database_url,
        DBOPS_BACKUP_DIR=str(tmp_path),
        HEALTH_TOKEN=TOKEN,
    )
    for name in ("WEB_CONCURRENCY", "GUNICORN_THREADS", "GUNICORN_TIMEOUT"):
        environment.pop(name, None)
    port = closed_port()
    with (tmp_path / "gunicorn.log").open("w") as log:  # an access line per request
        server = subprocess.Popen(
            [GUNICORN, "-c", "gunicorn.conf.py", "caloria.wsgi:application",
             "--bind", f"127.0.0.1:{port}"],
            cwd=PROJECT_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return server, f"http://127.0.0.1:{port}"


def stop_gunicorn(server: subprocess.Popen) -> float:
    """SIGTERM, as systemd and Kubernetes stop it; the seconds it took (SIGKILL after 40)."""
    started = time.monotonic()
    terminate(server, timeout=40)
    return time.monotonic() - started


def test_liveness_answers_within_a_second_while_the_database_hangs_and_monitors_poll(
    throwaway_cluster, migrated_cluster_url, tmp_path
):
    server, base = serve_with_gunicorn(migrated_cluster_url, tmp_path)
    # Any session cookie, valid or not, makes a request look its session up in the database.
    cookie = "sessionid=not-a-session"
    monitors = [
        Monitor(f"{base}/health/?format=json", Authorization=f"Bearer {TOKEN}"),
        Monitor(f"{base}/health/?format=json"),
        Monitor(f"{base}/health/?format=json", Cookie=cookie),
    ]
    try:
        wait_for_server(f"{base}/health/live/", server)
        for _ in range(16):  # every request thread has its database connection open
            assert fetch(f"{base}/health/?format=json", Cookie=cookie)[0] in (200, 500)
        throwaway_cluster.freeze()
        time.sleep(1.1)  # results cached before the freeze (DBOPS_HEALTH_CACHE_SECONDS) expire
        for monitor in monitors:
            monitor.start()
        time.sleep(0.5)
        live = []
        for _ in range(20):
            live.append(fetch(f"{base}/health/live/", timeout=60))
            time.sleep(0.3)
        for monitor in monitors:
            monitor.stop()
        stopped_within = stop_gunicorn(server)  # the server still frozen
    finally:
        for monitor in monitors:
            monitor.stop()
        if server.poll() is None:
            stop_gunicorn(server)
        throwaway_cluster.thaw()

    live_seconds = [round(seconds, 2) for _, _, seconds in live]
    health_seconds = [[round(seconds, 2) for *_, seconds in m.answers] for m in monitors]
    assert [status for status, _, _ in live] == [200] * len(live)
    assert max(live_seconds) < 1, live_seconds
    answers = [answer for monitor in monitors for answer in monitor.answers]
    assert all(len(monitor.answers) >= 2 for monitor in monitors), health_seconds
    for status, body, seconds in answers:
        assert status == 500
        assert seconds < DEADLINE_SECONDS + 1.5, health_seconds
        assert str(throwaway_cluster.port) not in body
    bodies = [json.loads(body) for _, body, _ in answers]
    # A check whose thread has no connection yet fails its connect after
    # DATABASE_CONNECT_TIMEOUT (5 s), so a probe may also see that answer.
    for body in bodies:
        for key, unreachable in DATABASE_CHECKS.items():
            assert body[key] in ("Unavailable: Timed out after 3 s", f"Unavailable: {unreachable}")
    assert any(
        body[key] == "Unavailable: Timed out after 3 s"
        for body in bodies
        for key in DATABASE_CHECKS
    )
    assert all("details" in json.loads(body) for _, body, _ in monitors[0].answers)
    # A thread hung on the frozen server does not keep a worker from exiting.
    assert stopped_within < 10
