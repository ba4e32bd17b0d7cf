"""The SQLite library in the import's process: its memory statistics are turned off, safely.

Each case runs in a fresh Python process: the setting is process-wide, and this test process
has SQLite connections open.
"""

import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from dbops.sqlite_import import source
from tests.conftest import PROJECT_ROOT

MEMORY_USED = """
import ctypes
library = ctypes.CDLL("libsqlite3.so.0")
def memory_used():
    used, highest = ctypes.c_int64(), ctypes.c_int64()
    library.sqlite3_status64(0, ctypes.byref(used), ctypes.byref(highest), 0)
    return used.value
"""


def run_python(code: str) -> list[str]:
    completed = subprocess.run(
        [sys.executable, "-c", MEMORY_USED + code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return completed.stdout.split()


def test_with_no_connection_open_the_statistics_are_turned_off_and_sqlite_still_works():
    output = run_python(
        "import sqlite3\n"
        "from dbops.sqlite_import import source\n"
        "print(source.stop_memory_statistics())\n"
        "connection = sqlite3.connect(':memory:')\n"
        "print(connection.execute('SELECT 6 * 7').fetchone()[0], memory_used())\n"
        "print(source.stop_memory_statistics(), connection.execute('SELECT 1').fetchone()[0])\n"
    )

    # No memory counted with a connection open: the statistics are off.
    assert output == ["True", "42", "0", "True", "1"]


def test_with_a_connection_open_sqlite_is_left_as_it_was():
    output = run_python(
        "import sqlite3\n"
        "from dbops.sqlite_import import source\n"
        "connection = sqlite3.connect(':memory:')\n"
        "print(source.stop_memory_statistics())\n"
        "print(connection.execute('SELECT 6 * 7').fetchone()[0], memory_used() > 0)\n"
    )

    assert output == ["False", "42", "True"]


def test_with_the_statistics_already_off_and_a_connection_open_sqlite_is_left_as_it_was():
    # With the statistics off, "no memory in use" would say nothing about open connections.
    output = run_python(
        "library.sqlite3_config(9, ctypes.c_int(0))\n"
        "import sqlite3\n"
        "from dbops.sqlite_import import source\n"
        "connection = sqlite3.connect(':memory:')\n"
        "print(source.stop_memory_statistics())\n"
        "print(connection.execute('SELECT 6 * 7').fetchone()[0])\n"
    )

    assert output == ["False", "42"]


def test_with_another_thread_running_sqlite_is_left_as_it_was():
    output = run_python(
        "import sqlite3, threading\n"
        "from dbops.sqlite_import import source\n"
        "stop = threading.Event()\n"
        "thread = threading.Thread(target=stop.wait)\n"
        "thread.start()\n"
        "print(source.stop_memory_statistics())\n"
        "stop.set()\n"
        "connection = sqlite3.connect(':memory:')\n"
        "print(connection.execute('SELECT 6 * 7').fetchone()[0], memory_used() > 0)\n"
    )

    assert output == ["False", "42", "True"]


@pytest.mark.django_db
def test_an_import_turns_the_statistics_off_before_it_opens_the_source(tmp_path, monkeypatch):
    calls = []
    opened = source.take_snapshot

    def take_snapshot(*args):
        calls.append("snapshot")
        return opened(*args)

    monkeypatch.setattr(source, "stop_memory_statistics", lambda: calls.append("stop"))
    monkeypatch.setattr(source, "take_snapshot", take_snapshot)
    missing = tmp_path / "missing.sqlite3"

    with pytest.raises(CommandError, match=r"missing\.sqlite3"):
        call_command("import_sqlite", str(missing), "--dry-run", stderr=StringIO())

    assert calls == ["stop", "snapshot"]
