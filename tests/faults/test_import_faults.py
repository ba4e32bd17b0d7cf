"""import_sqlite under faults: killed, interrupted, or cut off from PostgreSQL mid-copy; its
child processes stopped or killed during preflight; its snapshot on a disk that is full or
cannot sync. (Faults once the sequences are set, and how each run is recorded, whatever
stopped it: test_import_sequences_and_runs.py.)

Most tests run the import as a real child process against the test database and wait until
the server is executing the COPY of the large table (or preflight has started its children),
then strike; the disk's faults are met by an import in this process.
"""

import os
import signal
import subprocess
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from caloria.models import FoodEntry, User
from dbops.models import ImportRun
from dbops.sqlite_import import source
from tests.conftest import LARGE_TABLE_ROWS, leave_free
from tests.importing import (
    copy_backend_pid,
    failed_import,
    imported_tables_are_empty,
    start_import,
    wait_for_backend_to_end,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_sigkill_during_the_copy_leaves_the_target_untouched_and_a_rerun_succeeds(
    large_source, test_database_url, tmp_path
):
    process = start_import(large_source, test_database_url, tmp_path)
    pid = copy_backend_pid("caloria_foodentry")
    process.kill()
    process.communicate(timeout=30)
    wait_for_backend_to_end(pid)

    assert not User.objects.exists()
    assert not FoodEntry.objects.exists()

    call_command("import_sqlite", str(large_source), "--noinput", verbosity=0)

    assert FoodEntry.objects.count() == LARGE_TABLE_ROWS
    assert ImportRun.objects.filter(status=ImportRun.Status.SUCCEEDED).count() == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_rolls_back_and_records_an_interrupted_run(
    large_source, test_database_url, tmp_path, signum
):
    process = start_import(large_source, test_database_url, tmp_path)
    copy_backend_pid("caloria_foodentry")
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 1
    assert "interrupted" in stderr
    assert "nothing was committed" in stderr
    assert "Traceback" not in stderr
    assert not FoodEntry.objects.exists()
    run = ImportRun.objects.get()
    assert run.status == ImportRun.Status.FAILED
    assert "interrupted" in run.error


def test_a_lost_connection_rolls_back_and_records_the_failure(
    large_source, test_database_url, tmp_path
):
    process = start_import(large_source, test_database_url, tmp_path)
    pid = copy_backend_pid("caloria_foodentry")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 1
    assert "nothing was committed" in stderr
    assert "Traceback" not in stderr
    assert not FoodEntry.objects.exists()
    assert ImportRun.objects.get().status == ImportRun.Status.FAILED


# --------------------------------------------------------------------------- child processes


def children_of(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(child) for child in found.stdout.split()]


def wait_for_children(pid: int, timeout: float = 30) -> list[int]:
    """The process's children, once it has some: the line announcing the value checks can come
    before the readers are forked."""
    deadline = time.monotonic() + timeout
    while not (children := children_of(pid)):
        assert time.monotonic() < deadline, f"no child process within {timeout} s"
        time.sleep(0.005)
    return children


def wait_for_line(process, text: str, timeout: float = 60) -> None:
    """Read the import's (unbuffered) output until a line holds `text`."""
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        if text in line:
            return
        assert time.monotonic() < deadline, f"no line with {text!r} within {timeout} s"
    raise AssertionError(f"the import ended before printing {text!r}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[0]
    return status != "Z"


def test_sigterm_during_preflight_stops_the_child_processes_and_records_it(
    large_source, test_database_url, tmp_path
):
    process = start_import(large_source, test_database_url, tmp_path)
    wait_for_line(process, "Checking every value against its target column")
    children = wait_for_children(process.pid)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)

    assert children, "preflight runs child processes"
    assert not any(alive(child) for child in children)
    assert process.returncode == 1
    assert "interrupted (signal SIGTERM)" in stderr
    assert ImportRun.objects.get().status == ImportRun.Status.FAILED
    assert not User.objects.exists()


def test_a_child_process_that_dies_fails_the_import_cleanly(
    large_source, test_database_url, tmp_path
):
    process = start_import(large_source, test_database_url, tmp_path)
    wait_for_line(process, "Checking every value against its target column")
    for child in wait_for_children(process.pid):
        os.kill(child, signal.SIGKILL)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 1
    assert "child process reading the snapshot ended without an answer (exit code -9)" in stderr
    assert "Traceback" not in stderr
    assert not User.objects.exists()
    assert ImportRun.objects.get().status == ImportRun.Status.FAILED


# --------------------------------------------------------------------------- the disk


def test_a_snapshot_that_does_not_fit_names_its_directory_and_leaves_nothing(
    filled_source, small_filesystem, settings
):
    settings.DBOPS_BACKUP_DIR = small_filesystem
    leave_free(small_filesystem, 64 * 1024)
    stderr = StringIO()

    with pytest.raises(CommandError) as raised:
        call_command("import_sqlite", str(filled_source), "--noinput", verbosity=0, stderr=stderr)

    message = str(raised.value)
    assert message.startswith(
        f"import_sqlite failed: no room for the snapshot in {small_filesystem / 'imports'}: "
        f"it needs about "
    )
    assert "MiB are free" in message
    assert str(filled_source) + ":" not in message  # the source is not to blame
    assert list((small_filesystem / "imports").iterdir()) == []
    assert not User.objects.exists()
    assert ImportRun.objects.get().status == ImportRun.Status.FAILED


def test_a_snapshot_that_cannot_be_synced_to_disk_fails_the_import(filled_source, monkeypatch):
    def cannot_sync(path):
        raise OSError(5, "Input/output error")

    # Forked children inherit the patch: neither the child nor the import's own retry can seal.
    monkeypatch.setattr(source, "seal", cannot_sync)

    output = failed_import(filled_source)

    assert "could not be written to disk (" in output
    assert "Input/output error); nothing was committed" in output
    assert imported_tables_are_empty()
    assert ImportRun.objects.get().status == ImportRun.Status.FAILED


def test_a_failed_sync_of_the_snapshot_is_not_retried(filled_source, monkeypatch):
    # Linux reports lost writes to one fsync only: a second one would pass.
    parent, seal = os.getpid(), source.seal

    def fails_in_the_child(path):
        if os.getpid() != parent:
            raise OSError(5, "Input/output error")
        return seal(path)

    monkeypatch.setattr(source, "seal", fails_in_the_child)

    output = failed_import(filled_source)

    assert "could not be written to disk" in output
    assert imported_tables_are_empty()
