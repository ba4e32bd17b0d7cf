"""Fixtures of the tests that run Caloria through a real PgBouncer in transaction mode.

One PgBouncer per test session (tests/pgbouncer.py) in front of the test server, and one
Caloria site behind it: a database of its own made from the restore tests' seeded template
(tests/restoring.py), served by gunicorn with `DATABASE_URL` pointing at PgBouncer,
`DATABASE_POOLER=pgbouncer` and `DATABASE_DIRECT_URL` at the server itself. Both URLs carry a
password (the server and PgBouncer trust local clients, so it is ignored) to prove that no
output shows it.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, clean_environment
from tests.pgbouncer import free_port, running_pgbouncer
from tests.processes import terminate
from tests.restoring import psql, server_url

DIRECT_PASSWORD = "SECRETPW-direct"
POOLED_PASSWORD = "SECRETPW-pooled"
HEALTH_TOKEN = "pooled-health-token-0123456789"
GUNICORN = str(Path(sys.executable).parent / "gunicorn")  # this virtualenv's


@pytest.fixture(scope="session")
def pgbouncer():
    """PgBouncer in transaction mode in front of the test server (every database of it)."""
    from django.db import connection

    settings_dict = connection.settings_dict
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = int(settings_dict.get("PORT") or 5432)
    with running_pgbouncer(host, port, settings_dict.get("USER") or "postgres") as pooler:
        yield pooler


def pooled_environment(pgbouncer, database: str, *, direct: bool = True, **variables) -> dict:
    """The variables of a Caloria process whose database goes through `pgbouncer`."""
    values = {
        "CALORIA_ENV": "test",
        "DATABASE_URL": pgbouncer.url(database, POOLED_PASSWORD),
        "DATABASE_POOLER": "pgbouncer",
        **variables,
    }
    if direct:
        values["DATABASE_DIRECT_URL"] = server_url(database, DIRECT_PASSWORD)
    return clean_environment(**values)


def server_connections(database: str) -> int:
    """How many sessions the server has on `database` now (from pg_stat_activity)."""
    rows = psql(
        "postgres",
        f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' "
        f"AND pid <> pg_backend_pid()",
    )
    return int(rows[0][0])


@dataclass
class PooledSite:
    database: str
    url: str
    environment: dict
    log: Path

    def get(self, path: str, **headers) -> tuple[int, str]:
        request = urllib.request.Request(self.url + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()


@pytest.fixture(scope="session")
def pooled_site(template, pgbouncer, tmp_path_factory):
    """Caloria on gunicorn (2 workers) through PgBouncer, on a seeded database of its own."""
    folder = tmp_path_factory.mktemp("pooled-site")
    (folder / "backups").mkdir(mode=0o700)
    (folder / "site.env").write_text("")
    database = f"pooled_e2e_{uuid.uuid4().hex[:8]}"
    psql("postgres", f'CREATE DATABASE "{database}" TEMPLATE "{template}"')
    port = free_port()
    environment = pooled_environment(
        pgbouncer,
        database,
        CALORIA_ENV_FILE=str(folder / "site.env"),
        DBOPS_BACKUP_DIR=str(folder / "backups"),
        HEALTH_TOKEN=HEALTH_TOKEN,
        WEB_CONCURRENCY="2",
    )
    log = folder / "gunicorn.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [GUNICORN, "caloria.wsgi:application", "-c", "gunicorn.conf.py",
             "--bind", f"127.0.0.1:{port}"],
            cwd=PROJECT_ROOT, env=environment, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    site = PooledSite(database, f"http://127.0.0.1:{port}", environment, log)
    try:
        wait_until_answering(site, process)
        yield site
    finally:
        terminate(process, timeout=15)
        psql("postgres", f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def wait_until_answering(site: PooledSite, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited ({process.returncode}):\n{site.log.read_text()}")
        try:
            if site.get("/health/live/")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not answer within 30 s:\n{site.log.read_text()}")
