"""Caloria behind a real PgBouncer in transaction mode (tests/pooling.py): the pooler really
pools per transaction, the health endpoints answer through it while the server sees no more
sessions than the pool, validate_environment reports it, and wrong settings are refused.

The admin pages through PgBouncer are driven by a real browser in tests/test_browser.py; the
session-bound commands are in tests/commands/test_pooler_commands.py; an iterator and repeated
queries on psycopg 3 through it in tests/test_pooled_queries.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection

from tests.conftest import PROJECT_ROOT
from tests.minimal_project import PSYCOPG3_PYTHON
from tests.pgbouncer import POOL_SIZE
from tests.pooling import (
    DIRECT_PASSWORD,
    HEALTH_TOKEN,
    POOLED_PASSWORD,
    pooled_environment,
    server_connections,
)


def test_pgbouncer_is_in_transaction_mode_and_clients_share_server_connections(
    pooled_site, pgbouncer
):
    clients = [psycopg2.connect(pgbouncer.url(pooled_site.database)) for _ in range(POOL_SIZE + 3)]
    try:
        backends = set()
        for client in clients:
            client.autocommit = True
            with client.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                backends.add(cursor.fetchone()[0])
        # Five clients stay connected; between their transactions they hold no server session.
        assert len(backends) <= POOL_SIZE
        [pool] = [p for p in pgbouncer.admin("SHOW POOLS") if p["database"] == pooled_site.database]
        assert pool["pool_mode"] == "transaction"
        assert int(pool["cl_active"]) + int(pool["cl_waiting"]) >= len(clients)
    finally:
        for client in clients:
            client.close()


def test_the_health_endpoints_answer_through_pgbouncer_within_the_pool(pooled_site, pgbouncer):
    token = {"Authorization": f"Bearer {HEALTH_TOKEN}", "Accept": "application/json"}

    def probe(path):
        return pooled_site.get(path, **token)

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(probe, ["/health/database/", "/health/", "/metrics"] * 8))
        sessions = server_connections(pooled_site.database)
        [pool] = [p for p in pgbouncer.admin("SHOW POOLS") if p["database"] == pooled_site.database]

    assert pooled_site.get("/health/live/")[0] == 200
    for status, body in answers:
        assert status == 200, body
        assert DIRECT_PASSWORD not in body and POOLED_PASSWORD not in body
    checks = json.loads(probe("/health/")[1])
    assert checks and all(value == "OK" for value in checks.values() if isinstance(value, str))
    # Two gunicorn workers keep their health threads' connections to PgBouncer, more than the
    # pool: the server still sees at most the pool.
    assert int(pool["cl_active"]) > POOL_SIZE
    assert sessions <= POOL_SIZE


def validate_environment(python, environment) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, "manage.py", "validate_environment"],
        cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


def test_validate_environment_reports_the_pooler_its_settings_and_the_direct_connection(
    pooled_site, pgbouncer
):
    environment = pooled_site.environment
    broken = {
        **environment,
        "DATABASE_DIRECT_URL": "postgres://postgres:SECRETPW-down@127.0.0.1:1/x",
    }
    missing = {k: v for k, v in environment.items() if k != "DATABASE_DIRECT_URL"}

    psycopg2_run = validate_environment(sys.executable, environment)
    psycopg3_run = validate_environment(PSYCOPG3_PYTHON, environment)
    unreachable = validate_environment(sys.executable, broken)
    unset = validate_environment(sys.executable, missing)

    assert psycopg2_run.returncode == 0, psycopg2_run.stdout
    lines = psycopg2_run.stdout
    assert (
        "passed   pooler: pgbouncer in transaction mode; server-side cursors off, CONN_MAX_AGE "
        "0, prepare threshold not used (psycopg2 never prepares)"
    ) in lines
    assert f"passed   database settings: postgresql 127.0.0.1:{pgbouncer.port}/" in lines
    assert "passed   direct connection: postgresql 127.0.0.1:" in lines
    assert "password=********: answered in" in lines
    assert "(used by import_sqlite, dbbackup, verify_backup, restore_backup" in lines
    assert psycopg3_run.returncode == 0, psycopg3_run.stdout
    assert "server-side cursors off, CONN_MAX_AGE 0, prepare threshold None" in psycopg3_run.stdout
    assert unreachable.returncode == 1
    assert "failed   direct connection: postgresql 127.0.0.1:1/x user=postgres password=" in (
        unreachable.stdout
    )
    assert "unreachable (OperationalError: " in unreachable.stdout
    assert unset.returncode == 0
    assert "warning  direct connection: not configured: import_sqlite, dbbackup" in unset.stdout
    assert "hint: Set DATABASE_DIRECT_URL" in unset.stdout
    for completed in (psycopg2_run, psycopg3_run, unreachable, unset):
        output = completed.stdout + completed.stderr
        assert DIRECT_PASSWORD not in output and POOLED_PASSWORD not in output
        assert "SECRETPW-down" not in output


def test_pooler_variables_that_cannot_work_are_refused_naming_the_variable(pgbouncer, tmp_path):
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    base = pooled_environment(pgbouncer, "caloria", direct=False, CALORIA_ENV_FILE=str(env_file))
    cases = {
        "DATABASE_POOLER: must be pgbouncer (or unset); got 'odyssey'": {
            "DATABASE_POOLER": "odyssey"
        },
        "DATABASE_DIRECT_URL: is only used with DATABASE_POOLER=pgbouncer": {
            "DATABASE_POOLER": "",
            "DATABASE_DIRECT_URL": "postgres://postgres@127.0.0.1/caloria",
        },
        "DATABASE_DIRECT_URL: must be a postgres:// URL": {
            "DATABASE_DIRECT_URL": "sqlite:////tmp/caloria.sqlite3"
        },
    }
    for message, variables in cases.items():
        completed = subprocess.run(
            [sys.executable, "manage.py", "check"],
            cwd=PROJECT_ROOT, env={**base, **variables}, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert completed.returncode == 1, completed.stderr
        assert message in completed.stderr


@pytest.mark.django_db
def test_a_pooled_database_with_server_side_cursors_on_fails_the_system_check(
    settings, monkeypatch
):
    settings.DBOPS_POOLER = "pgbouncer"
    monkeypatch.delitem(connection.settings_dict, "DISABLE_SERVER_SIDE_CURSORS", raising=False)

    with pytest.raises(SystemCheckError, match=r"dbops\.E012.*server-side cursors on"):
        call_command("check")

    monkeypatch.setitem(connection.settings_dict, "DISABLE_SERVER_SIDE_CURSORS", True)
    call_command("check")
    settings.DBOPS_POOLER = None
    monkeypatch.delitem(connection.settings_dict, "DISABLE_SERVER_SIDE_CURSORS")
    call_command("check")  # no pooler: server-side cursors are fine
