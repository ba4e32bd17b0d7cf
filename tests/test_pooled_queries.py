"""Queries that transaction pooling breaks, run through a real PgBouncer (tests/pgbouncer.py)
with the project's settings for it (DATABASE_POOLER=pgbouncer), in a child process on a
database of the test's own (tests/restoring.py's `site`): a chunked QuerySet.iterator() (an
export) and, on psycopg 3, one query run more often than psycopg's prepare threshold.

Each would usually work by luck: one client alone gets the server connection it used last
(PgBouncer reuses the most recent idle one). So between steps another client of the pool
holds that server connection in a transaction, and the next step lands on another one, as
it does on a busy site. The same script with the setting undone shows the failure it
prevents. The psycopg 3 script also binds parameters on the server (Django binds them on the
client, which never prepares), so that only the prepare threshold in force decides.
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import PROJECT_ROOT
from tests.minimal_project import PSYCOPG3_PYTHON
from tests.pooling import pooled_environment
from tests.restoring import site  # noqa: F401 - a database of the test's own

# Another client of the pool, in a transaction, on the server connection this process used
# last: the next query of this process gets another server connection.
HOLDER = """
import os
try:
    import psycopg as driver
except ImportError:
    import psycopg2 as driver

def hold_the_last_server():
    holder = driver.connect(os.environ["POOLED_URL"])
    holder.cursor().execute("SELECT 1")
    return holder
"""

ITERATE = (
    HOLDER
    + """
from django.db import connection
from caloria.models import FoodEntry
if os.environ.get("CURSORS_ON"):
    connection.settings_dict["DISABLE_SERVER_SIDE_CURSORS"] = False
entries = FoodEntry.objects.order_by("pk").iterator(chunk_size=5)
rows = [next(entries) for _ in range(5)]  # the first chunk
holder = hold_the_last_server()
try:
    rows += list(entries)
    print("rows", len(rows))
except Exception as exc:
    print("failed:", type(exc).__name__, str(exc).splitlines()[0])
finally:
    holder.close()
"""
)

REPEAT = (
    HOLDER
    + """
from django.db import connection
options = connection.settings_dict["OPTIONS"]
options["server_side_binding"] = True  # Django binds on the client by default: never prepares
if os.environ.get("PREPARES"):
    options["prepare_threshold"] = 5  # psycopg's own default, which Django's overrides
counts = []
try:
    for run in range(12):
        holder = hold_the_last_server() if run % 2 else None
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM caloria_foodentry WHERE id > %s", [run])
            counts.append(cursor.fetchone()[0])
        if holder is not None:
            holder.close()
    print("runs", len(counts))
except Exception as exc:
    print("failed:", type(exc).__name__, str(exc).splitlines()[0])
"""
)


def run_through(pgbouncer, on, python: str, script: str, **variables) -> str:
    """What `script` printed, run by `python` with its database `on.live` through PgBouncer."""
    environment = pooled_environment(
        pgbouncer,
        on.live,
        direct=False,
        POOLED_URL=pgbouncer.url(on.live),
        **on.env,
        **variables,
    )
    completed = subprocess.run(
        [python, "manage.py", "shell", "-v", "0", "-c", script],
        cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.strip()


def test_a_chunked_iterator_reads_every_row_through_pgbouncer(site, pgbouncer):  # noqa: F811
    assert run_through(pgbouncer, site, sys.executable, ITERATE) == "rows 12"
    failed = run_through(pgbouncer, site, sys.executable, ITERATE, CURSORS_ON="1")
    assert failed.startswith("failed: InvalidCursorName"), failed
    assert "does not exist" in failed


def test_psycopg3_runs_a_query_past_its_prepare_threshold(site, pgbouncer):  # noqa: F811
    assert run_through(pgbouncer, site, PSYCOPG3_PYTHON, REPEAT) == "runs 12"
    failed = run_through(pgbouncer, site, PSYCOPG3_PYTHON, REPEAT, PREPARES="1")
    assert failed.startswith("failed: "), failed
    assert "prepared statement" in failed and "does not exist" in failed
