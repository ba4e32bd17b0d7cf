"""Helpers shared by the tests that run import_sqlite: in this process, returning what the
command said (`import_sqlite`, `failed_import`), or as a child process that a test watches or
strikes while the server runs its COPY (`start_import`, `copy_backend_pid`); and the source
changed behind Django's back (`execute`).
"""

import sqlite3
import subprocess
import sys
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from caloria.models import FoodEntry, User, WeightEntry
from tests.conftest import PROJECT_ROOT, clean_environment
from tests.fieldtypes.models import EveryField


def import_sqlite(path, *args):
    """Run the command; return (stdout, stderr), or raise CommandError with stderr attached."""
    stdout, stderr = StringIO(), StringIO()
    try:
        call_command("import_sqlite", str(path), "--noinput", *args, stdout=stdout, stderr=stderr)
    except CommandError as error:
        error.stdout, error.stderr = stdout.getvalue(), stderr.getvalue()
        raise
    return stdout.getvalue(), stderr.getvalue()


def failed_import(path, *args) -> str:
    """Run an import that must fail; return everything it said."""
    with pytest.raises(CommandError) as raised:
        import_sqlite(path, *args)
    assert raised.value.returncode == 1
    return f"{raised.value}\n{raised.value.stderr}"


def execute(path, *statements):
    """Change a source file behind Django's back, as other tools (or bugs) do."""
    with sqlite3.connect(path) as source:
        source.execute("PRAGMA ignore_check_constraints = ON")
        for statement in statements:
            source.execute(statement)
    source.close()


def imported_tables_are_empty() -> bool:
    return not (
        User.objects.exists()
        or FoodEntry.objects.exists()
        or WeightEntry.objects.exists()
        or EveryField.objects.exists()
    )


def start_import(path, database_url, tmp_path, *options):
    env_file = tmp_path / "fault.env"
    env_file.write_text("")
    return subprocess.Popen(
        [sys.executable, "manage.py", "import_sqlite", str(path), "--noinput", *options],
        cwd=PROJECT_ROOT,
        env=clean_environment(
            CALORIA_ENV="test",
            DATABASE_URL=database_url,
            CALORIA_ENV_FILE=str(env_file),
            DBOPS_BACKUP_DIR=str(tmp_path / "backups"),
            PYTHONUNBUFFERED="1",  # progress lines arrive as they are written
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def copy_backend_pid(table: str, timeout: float = 60) -> int:
    """Wait until a server backend is running the COPY into `table`; return its pid."""
    return backend_pid_running(f'COPY "{table}"%', timeout)


def checksum_backend_pid(table: str, timeout: float = 60) -> int:
    """Wait until a server backend is reading `table` for the verification's checksum."""
    return backend_pid_running(f'COPY (SELECT%FROM "{table}"%', timeout)


def backend_pid_running(query_pattern: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s "
                "AND datname = current_database()",
                [query_pattern],
            )
            row = cursor.fetchone()
        if row:
            return row[0]
        time.sleep(0.01)
    raise AssertionError(f"no query like {query_pattern} started within {timeout} s")


def wait_for_backend_to_end(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid])
            if cursor.fetchone() is None:
                return
        time.sleep(0.05)
    raise AssertionError(f"backend {pid} still running after {timeout} s")
