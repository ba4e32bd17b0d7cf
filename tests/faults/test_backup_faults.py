"""Backups and their verification under faults: a full disk, a missing pg_restore, a killed
verification. Real files on a real (small) file system, the real pg_dump and pg_restore, real
child processes killed with SIGKILL.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from caloria.models import User
from dbops import locks
from dbops.models import BackupRecord
from tests import pg_driver
from tests.conftest import PROJECT_ROOT, clean_environment, database_url, leave_free

pytestmark = pytest.mark.django_db(transaction=True)


def add_food_entries(count: int, name_sql: str = "'food ' || n") -> None:
    """`count` food entries of one user, written by PostgreSQL itself (fast)."""
    user = User.objects.create(username=f"eater{uuid.uuid4().hex[:6]}")
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO caloria_foodentry (user_id, eaten_at, name, calories, meal, notes, "
            f"created_at) SELECT %s, now(), {name_sql}, n %% 3000, '', '', now() "
            "FROM generate_series(1, %s) n",
            [user.pk, count],
        )


def manage_environment(**variables) -> dict[str, str]:
    env_file = Path(settings.DBOPS_BACKUP_DIR).parent / "backup-faults.env"
    env_file.write_text("")
    variables.setdefault("CALORIA_ENV", "test")
    variables.setdefault("DATABASE_URL", database_url(connection.settings_dict))
    variables.setdefault("DBOPS_BACKUP_DIR", str(settings.DBOPS_BACKUP_DIR))
    return clean_environment(CALORIA_ENV_FILE=str(env_file), **variables)


def run_manage(*args, **variables) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_ROOT,
        env=manage_environment(**variables),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def last_line(stderr: str) -> str:
    return [line for line in stderr.splitlines() if line.strip()][-1]


def database_names(like: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [like])
        return {row[0] for row in cursor.fetchall()}


def scratch_pattern() -> str:
    return connection.settings_dict["NAME"].replace("_", "\\_") + "\\_verify\\_%"


# --------------------------------------------------------------------------- a full disk


def test_a_backup_that_does_not_fit_fails_and_leaves_no_file_that_listbackups_would_list(
    small_filesystem,
):
    add_food_entries(8000, name_sql="md5(n::text) || md5((n + 1)::text)")
    leave_free(small_filesystem, 64 * 1024)

    completed = run_manage("dbbackup", DBOPS_BACKUP_DIR=str(small_filesystem))
    listed = run_manage("listbackups", "-q", DBOPS_BACKUP_DIR=str(small_filesystem))

    assert completed.returncode == 1, completed.stderr
    assert last_line(completed.stderr).startswith("CommandError: dbbackup failed: ")
    assert "No space left on device" in completed.stderr
    assert "Traceback" not in completed.stderr
    record = BackupRecord.objects.get()
    assert record.status == BackupRecord.Status.FAILED
    assert "No space left on device" in record.error
    assert sorted(os.listdir(small_filesystem)) == ["filler"]
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == ""


def test_the_same_backup_fits_once_there_is_room(small_filesystem):
    """The other half of the test above: the data, not the mount, made it fail."""
    add_food_entries(8000, name_sql="md5(n::text) || md5((n + 1)::text)")

    completed = run_manage("dbbackup", DBOPS_BACKUP_DIR=str(small_filesystem))

    assert completed.returncode == 0, completed.stderr
    record = BackupRecord.objects.get()
    assert record.size > 64 * 1024
    assert sorted(os.listdir(small_filesystem)) == [record.filename, record.filename + ".metadata"]


def test_a_missing_backup_directory_is_created_private_whatever_the_umask(tmp_path):
    directory = tmp_path / "new" / "backups"

    completed = subprocess.run(
        ["sh", "-c", f'umask 000 && exec "{sys.executable}" manage.py dbbackup'],
        cwd=PROJECT_ROOT,
        env=manage_environment(DBOPS_BACKUP_DIR=str(directory)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert directory.stat().st_mode & 0o777 == 0o700
    assert directory.parent.stat().st_mode & 0o777 == 0o700
    record = BackupRecord.objects.get()
    assert (directory / record.filename).stat().st_mode & 0o777 == 0o600


# --------------------------------------------------------------------------- pg_restore missing


@pytest.fixture
def path_without_pg_restore(tmp_path) -> str:
    """A PATH whose only program is the real pg_dump."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "pg_dump").symlink_to(shutil.which("pg_dump"))
    return str(folder)


def test_dbbackup_without_pg_restore_fails_in_one_line_as_it_cannot_read_the_backup_back(
    path_without_pg_restore,
):
    """Every backup is read back with pg_restore --list before it counts: without pg_restore
    nobody knows the file restores, so the run fails (and --verify never starts)."""
    completed = run_manage("dbbackup", "--verify", PATH=path_without_pg_restore)

    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    assert last_line(completed.stderr) == (
        "CommandError: dbbackup failed: cannot read the backup back: pg_restore is not on PATH "
        "(Debian: postgresql-client)"
    )
    record = BackupRecord.objects.get()
    assert record.status == BackupRecord.Status.FAILED
    assert record.verification == BackupRecord.Verification.NOT_VERIFIED
    assert database_names(scratch_pattern()) == set()


def test_verify_backup_without_pg_restore_records_a_failed_verification_in_one_line(
    path_without_pg_restore,
):
    call_command("dbbackup", verbosity=0)

    completed = run_manage("verify_backup", "--latest", PATH=path_without_pg_restore)

    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    assert "verification failed: pg_restore is not on PATH" in last_line(completed.stderr)
    record = BackupRecord.objects.get()
    assert record.verification == BackupRecord.Verification.FAILED
    assert record.verified_at is not None


# --------------------------------------------------------------------------- a killed verification


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    pytest.fail(f"gave up waiting for {what}")


@pytest.fixture
def held_scratch_database():
    """A scratch database of this database's naming whose lock another session holds, as a
    verification running at the same time would; dropped afterwards."""
    name = f"{connection.settings_dict['NAME']}_verify_{uuid.uuid4().hex[:10]}"
    holder = pg_driver.connect(database_url(connection.settings_dict))
    holder.autocommit = True
    try:
        with holder.cursor() as cursor:
            locks.hold(cursor, locks.SCRATCH_DATABASE, locks.key_of_name(name))
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield name
        with holder.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        holder.close()


def test_the_next_verification_drops_the_scratch_database_of_a_killed_one_but_not_a_live_one(
    held_scratch_database,
):
    add_food_entries(100_000)
    call_command("dbbackup", verbosity=0)
    record = BackupRecord.objects.get()
    live = {held_scratch_database}
    child = subprocess.Popen(
        [sys.executable, "manage.py", "verify_backup", record.filename],
        cwd=PROJECT_ROOT,
        env=manage_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        stale = wait_for(
            lambda: database_names(scratch_pattern()) - live, 60, "the child's scratch database"
        ).pop()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()

    def lock_released():
        with connection.cursor() as cursor:
            return locks.key_of_name(stale) not in locks.held_keys(cursor, locks.SCRATCH_DATABASE)

    wait_for(lock_released, 10, "the killed verification's session to end")
    assert stale in database_names(scratch_pattern())
    output = StringIO()
    call_command("verify_backup", record.filename, stderr=output)

    assert database_names(scratch_pattern()) == live
    assert f"Dropped stale scratch database {stale}" in output.getvalue()
    assert held_scratch_database not in output.getvalue()
    record.refresh_from_db()
    assert record.verification == BackupRecord.Verification.PASSED


def test_a_verification_that_cannot_create_its_scratch_database_is_recorded_as_failed(
    login_role,
):
    call_command("dbbackup", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(f'GRANT SELECT, UPDATE ON dbops_backuprecord TO "{login_role}"')
    url = database_url(connection.settings_dict, USER=login_role, PASSWORD="SECRETPW")

    completed = run_manage("verify_backup", "--latest", DATABASE_URL=url)

    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    assert "verification failed: could not verify: permission denied to create database" in (
        last_line(completed.stderr)
    )
    assert "SECRETPW" not in completed.stdout + completed.stderr
    record = BackupRecord.objects.get()
    assert record.verification == BackupRecord.Verification.FAILED
    assert record.verification_detail.startswith("could not verify: permission denied")


def test_a_killed_backup_is_shown_as_abandoned_by_the_next_backup():
    blocker = pg_driver.connect(database_url(connection.settings_dict))
    try:
        with blocker.cursor() as cursor:  # pg_dump and the row counts wait for this lock
            cursor.execute("LOCK TABLE caloria_foodentry IN ACCESS EXCLUSIVE MODE")
        process = subprocess.Popen(
            [sys.executable, "manage.py", "dbbackup", "--noinput"],
            cwd=PROJECT_ROOT,
            env=manage_environment(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(
            lambda: BackupRecord.objects.filter(status=BackupRecord.Status.RUNNING).exists(),
            60,
            "the backup to record its start",
        )
        process.kill()
        process.wait(timeout=30)
    finally:
        blocker.rollback()
        blocker.close()
    killed = BackupRecord.objects.get()
    assert killed.status == BackupRecord.Status.RUNNING

    def lock_released():
        with connection.cursor() as cursor:
            return killed.pk not in locks.held_keys(cursor, locks.BACKUP_RUN)

    wait_for(lock_released, 30, "the server to end the killed backup's session")
    call_command("dbbackup", verbosity=0)

    killed.refresh_from_db()
    assert killed.status == BackupRecord.Status.ABANDONED
    assert f"its process (pid {process.pid} on " in killed.error
    assert BackupRecord.objects.exclude(pk=killed.pk).get().status == "succeeded"
