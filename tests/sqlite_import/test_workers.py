"""dbops.sqlite_import.workers: reads of the snapshot in child processes, which report back as
plain data and never outlive the import."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dbops.sqlite_import.source import Snapshot
from dbops.sqlite_import.workers import ChildFailed, ForkedRead, Workers
from tests.conftest import PROJECT_ROOT

PARENT = """
import sqlite3, sys, time
from pathlib import Path
from dbops.sqlite_import.source import Snapshot
from dbops.sqlite_import.workers import ForkedRead
path = Path(sys.argv[1])
child = ForkedRead(Snapshot(path, path, path.stat().st_size), lambda sqlite: time.sleep(60))
print(child.process.pid, flush=True)
time.sleep(60)
"""


@pytest.fixture
def snapshot(tmp_path) -> Snapshot:
    path = tmp_path / "snapshot.sqlite3"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        connection.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
    connection.close()
    return Snapshot(path, path, path.stat().st_size)


def exists(pid: int) -> bool:
    """The process runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_read_returns_its_result_from_the_child(snapshot):
    child = Workers(snapshot).read(
        lambda sqlite: sqlite.execute("SELECT count(*) FROM t").fetchone()[0]
    )

    assert child.result() == 2


def test_a_failed_read_is_reported_with_its_error(snapshot):
    child = ForkedRead(snapshot, lambda sqlite: int("not a number"))

    with pytest.raises(ChildFailed) as failed:
        child.result()

    assert failed.value.died is False
    assert "failed (ValueError: invalid literal for int()" in str(failed.value)


def test_a_child_that_dies_is_reported_with_its_exit_code(snapshot):
    child = ForkedRead(snapshot, lambda sqlite: os._exit(7))

    with pytest.raises(ChildFailed) as failed:
        child.result()

    assert failed.value.died is True
    assert "ended without an answer (exit code 7)" in str(failed.value)


def test_a_sqlite_error_in_the_child_is_raised_as_one(snapshot):
    child = ForkedRead(snapshot, lambda sqlite: sqlite.execute("SELECT * FROM missing"))

    with pytest.raises(sqlite3.DatabaseError, match="no such table: missing"):
        child.result()


def test_stopping_the_workers_kills_a_child_still_reading(snapshot):
    workers = Workers(snapshot)
    child = workers.read(lambda sqlite: time.sleep(60))

    workers.stop()

    assert not child.process.is_alive()


def test_a_child_ends_when_its_parent_is_killed(snapshot):
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(snapshot.path)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    child = int(parent.stdout.readline())
    assert exists(child)

    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 2  # the child looks every 0.2 s
    while exists(child) and time.monotonic() < deadline:
        time.sleep(0.05)

    assert not exists(child)
