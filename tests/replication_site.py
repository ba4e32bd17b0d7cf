"""Caloria on a pair of throwaway clusters, for tests/test_replication.py: a primary that
archives WAL, its hot standby made by `pg_basebackup -R` (tests/clusters.py), and the site
served by `manage.py runserver` in a child process whose environment points DATABASE_URL at
the primary and DATABASE_REPLICA_URL at the standby, as a deployment does. The fixtures are
module-scoped: the clusters and the server are shared by every test of the module.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.clusters import Cluster
from tests.conftest import PROJECT_ROOT, Completed, clean_environment, closed_port

HEALTH_TOKEN = "health-token-" + "r3pl1ca" * 4
METRICS_TOKEN = "metrics-token-" + "m3tr1c" * 4
STANDBY_PASSWORD = "standby-" + "pa55w0rd" * 3  # trust authentication ignores it
STAFF_PASSWORD = "staff-" + "l0g1n" * 4
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
REPLICA_KEY = "ReplicaLag(alias='replica')"
ARCHIVE_KEY = "WalArchiving(alias='default')"
WARN_BYTES, FAIL_BYTES = 64 * 1024, 4 * 1024 * 1024


class Pair:
    """The primary (archiving into `archive`), its standby, and Caloria's environment for
    them: `manage()` runs a command in a child process with it."""

    def __init__(self, primary: Cluster, standby: Cluster, archive, folder):
        self.primary, self.standby, self.archive = primary, standby, archive
        env_file = folder / "empty.env"
        backups = folder / "backups"
        backups.mkdir(mode=0o700, exist_ok=True)
        self.environment = {
            "CALORIA_ENV": "test",
            "CALORIA_ENV_FILE": str(env_file),
            "DATABASE_URL": primary.url("caloria"),
            "DATABASE_REPLICA_URL": (
                f"postgres://postgres:{STANDBY_PASSWORD}@127.0.0.1:{standby.port}/caloria"
            ),
            "DBOPS_BACKUP_DIR": str(backups),
            "DATABASE_CONNECT_TIMEOUT": "2",
        }

    def manage(self, *args, **variables) -> Completed:
        completed = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=PROJECT_ROOT,
            env=clean_environment(**{**self.environment, **variables}),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return Completed(completed.returncode, completed.stdout, completed.stderr)

    def write(self, rows: int = 1) -> None:
        self.primary.execute(
            f"INSERT INTO ticks SELECT repeat('x', 100) FROM generate_series(1, {rows})", "caloria"
        )

    def caught_up(self) -> None:
        """Write on the primary and wait until the standby replayed it."""
        self.write()
        self.standby.wait_for_replay(self.primary.wal_lsn())

    @contextlib.contextmanager
    def replay_paused(self):
        self.standby.execute("SELECT pg_wal_replay_pause()")
        try:
            yield
        finally:
            self.standby.execute("SELECT pg_wal_replay_resume()")
            self.caught_up()

    def archive_command(self, command: str) -> None:
        self.primary.execute(f"ALTER SYSTEM SET archive_command = '{command}'")
        self.primary.execute("SELECT pg_reload_conf()")

    def copy_to_archive(self) -> str:
        return f"cp %p {self.archive}/%f"


@contextlib.contextmanager
def running_pair(folder):
    """The primary and its caught-up standby, Caloria migrated on the primary with a staff
    user; both clusters removed afterwards."""
    (folder / "empty.env").write_text("")
    primary = Cluster({"wal_level": "replica", "max_wal_senders": "4", "archive_mode": "on"})
    standby = None
    try:
        primary.start()
        archive = primary.folder_for_server("archive")
        primary.execute(f"ALTER SYSTEM SET archive_command = 'cp %p {archive}/%f'")
        primary.execute("SELECT pg_reload_conf()")
        primary.execute("CREATE DATABASE caloria")
        primary.execute("CREATE TABLE ticks (filler text)", "caloria")
        environment = {
            "CALORIA_ENV": "test",
            "DATABASE_URL": primary.url("caloria"),
            "DJANGO_SUPERUSER_PASSWORD": STAFF_PASSWORD,
        }
        for command in (
            "migrate --noinput -v 0",
            "createsuperuser --noinput --username oncall --email oncall@example.com",
        ):
            done = subprocess.run(
                [sys.executable, "manage.py", *command.split()],
                cwd=PROJECT_ROOT,
                env=clean_environment(**environment, CALORIA_ENV_FILE=str(folder / "empty.env")),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stdout + done.stderr
        standby = Cluster(standby_of=primary)
        standby.start()
        pair = Pair(primary, standby, archive, folder)
        pair.caught_up()
        yield pair
    finally:
        if standby is not None:
            standby.remove()
        primary.remove()


class Served:
    """Caloria served by `manage.py runserver` in a child process, with a staff session."""

    def __init__(self, base: str):
        self.base = base
        self.session = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str, opener=None, **headers) -> tuple[int, str]:
        request = urllib.request.Request(self.base + path, headers=headers)
        try:
            with (opener or urllib.request.build_opener()).open(request, timeout=20) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def health(self) -> tuple[int, dict]:
        status, body = self.get("/health/?format=json", Authorization=f"Bearer {HEALTH_TOKEN}")
        return status, json.loads(body)

    def health_until(self, key: str, expected: str, within: float = 20) -> tuple[int, dict]:
        """Probe /health/ until the check `key` says `expected` (the last answer otherwise)."""
        deadline = time.monotonic() + within
        while True:
            status, body = self.health()
            if body.get(key) == expected or time.monotonic() > deadline:
                return status, body
            time.sleep(0.1)

    def metrics(self) -> tuple[str, dict]:
        status, text = self.get(
            "/metrics", Accept=OPENMETRICS, Authorization=f"Bearer {METRICS_TOKEN}"
        )
        assert status == 200, text
        values = {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if not sample.labels
        }
        return text, values

    def log_in(self) -> None:
        _, page = self.get("/admin/login/", opener=self.session)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        form = urllib.parse.urlencode(
            {"csrfmiddlewaretoken": token, "username": "oncall", "password": STAFF_PASSWORD}
        ).encode()
        request = urllib.request.Request(self.base + "/admin/login/?next=/admin/", data=form)
        with self.session.open(request, timeout=20) as response:
            assert response.status == 200

    def status_page(self) -> str:
        status, page = self.get("/admin/database/", opener=self.session)
        assert status == 200 and "Database status" in page, page[:500]
        return page


def serve(environment: dict, folder) -> tuple[subprocess.Popen, Served]:
    port = closed_port()
    log = (folder / f"server-{port}.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=PROJECT_ROOT,
        env=clean_environment(**environment),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    served = Served(f"http://127.0.0.1:{port}")
    served.log_path = folder / f"server-{port}.log"
    deadline = time.monotonic() + 30
    while True:
        assert server.poll() is None, (folder / f"server-{port}.log").read_text()
        try:
            if served.get("/health/live/")[0] == 200:
                return server, served
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


@contextlib.contextmanager
def running_site(pair, folder, **thresholds: str):
    """Caloria on the pair: lag past 64 kB warns, past 4 MB fails (the seconds thresholds are
    out of reach, so the bytes decide); every probe queries (no cache). `thresholds`
    (DBOPS_REPLICA_LAG_* variables) replace those, for a server where the seconds decide."""
    server, served = serve(
        {
            **pair.environment,
            "HEALTH_TOKEN": HEALTH_TOKEN,
            "METRICS_TOKEN": METRICS_TOKEN,
            "DBOPS_HEALTH_CACHE_SECONDS": "0",
            "DBOPS_REPLICA_LAG_WARN_BYTES": str(WARN_BYTES),
            "DBOPS_REPLICA_LAG_FAIL_BYTES": str(FAIL_BYTES),
            "DBOPS_REPLICA_LAG_WARN_SECONDS": "3600",
            "DBOPS_REPLICA_LAG_FAIL_SECONDS": "7200",
            **thresholds,
        },
        folder,
    )
    try:
        served.log_in()
        yield served
    finally:
        server.terminate()
        server.wait(timeout=20)
