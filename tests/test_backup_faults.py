"""Backups under faults: a full disk. Real files on a real (small) file system, the real
pg_dump.
"""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from caloria.models import User
from dbops.models import BackupRecord
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
    record = BackupRecord.objects.get()
    assert (directory / record.filename).stat().st_mode & 0o777 == 0o600
