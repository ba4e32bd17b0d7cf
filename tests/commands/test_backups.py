"""Backups with the real pg_dump and pg_restore against the real PostgreSQL server."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.utils import timezone

from caloria.models import FoodEntry, User
from dbops import backups
from dbops.models import BackupRecord
from tests import pg_driver
from tests.conftest import PROJECT_ROOT, clean_environment, database_url

pytestmark = pytest.mark.django_db(transaction=True)


def make_rows(users=3, entries_each=4):
    for n in range(users):
        user = User.objects.create(username=f"user{n}", email=f"user{n}@example.com")
        for m in range(entries_each):
            FoodEntry.objects.create(user=user, name=f"meal {n}-{m}", calories=100 + m)


def newest_migration(app_label: str) -> str:
    leaves = MigrationLoader(None, ignore_no_migrations=True).graph.leaf_nodes(app_label)
    return leaves[0][1]


def backup(*args) -> BackupRecord:
    call_command("dbbackup", *args, verbosity=0)
    return BackupRecord.objects.order_by("-id").first()


def scratch_databases() -> list[str]:
    """This test database's scratch databases (others' runs on the same server have their own)."""
    pattern = connection.settings_dict["NAME"].replace("_", "\\_") + "\\_verify\\_%"
    with connection.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [pattern])
        return [row[0] for row in cursor.fetchall()]


def run_manage(*args, **variables):
    env_file = Path(settings.DBOPS_BACKUP_DIR).parent / "backup-tests.env"
    env_file.write_text("")
    variables.setdefault("CALORIA_ENV", "test")
    variables.setdefault("DATABASE_URL", database_url(connection.settings_dict))
    variables.setdefault("DBOPS_BACKUP_DIR", str(settings.DBOPS_BACKUP_DIR))
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_ROOT,
        env=clean_environment(CALORIA_ENV_FILE=str(env_file), **variables),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_backup_is_recorded_with_size_sha256_counts_and_migrations():
    make_rows(users=3, entries_each=4)

    record = backup()

    path = backups.backup_path(record.filename)
    assert record.status == BackupRecord.Status.SUCCEEDED
    assert record.filename.endswith(".psql.bin.gz")
    assert record.size == path.stat().st_size
    assert record.sha256 == backups.file_sha256(path)
    assert record.table_counts["caloria_user"] == 3
    assert record.table_counts["caloria_foodentry"] == 12
    assert record.migrations["caloria"] == newest_migration("caloria")
    assert record.engine == "postgresql"
    assert record.duration_seconds > 0


def test_backup_files_and_their_directory_are_private():
    record = backup()

    path = backups.backup_path(record.filename)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_a_backup_restores_with_dbrestore_into_an_empty_database_with_every_row_back():
    make_rows(users=2, entries_each=3)
    expected = sorted(FoodEntry.objects.values_list("id", "user__username", "name", "calories"))
    record = backup()
    FoodEntry.objects.filter(name="meal 0-0").delete()
    target = f"{connection.settings_dict['NAME']}_restored"
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{target}"')
    try:
        restored = run_manage(
            "dbrestore", "-i", record.filename, "--uncompress", "--noinput",
            DATABASE_URL=database_url(connection.settings_dict, NAME=target),
        )  # fmt: skip
        assert restored.returncode == 0, restored.stderr
        restored_db = pg_driver.connect(database_url(connection.settings_dict, NAME=target))
        try:
            with restored_db.cursor() as cursor:
                cursor.execute(
                    "SELECT f.id, u.username, f.name, f.calories FROM caloria_foodentry f "
                    "JOIN caloria_user u ON u.id = f.user_id ORDER BY 1"
                )
                rows = cursor.fetchall()
        finally:
            restored_db.close()
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')

    assert rows == expected


def test_verify_backup_restores_into_a_scratch_database_and_records_the_result():
    make_rows()
    record = backup()

    call_command("verify_backup", record.filename, verbosity=0)

    record.refresh_from_db()
    assert record.verification == BackupRecord.Verification.PASSED
    assert record.verified_at is not None
    assert "counts match" in record.verification_detail
    assert scratch_databases() == []


def test_dbbackup_verify_backs_up_and_verifies_in_one_line():
    make_rows()

    record = backup("--verify")

    assert record.verification == BackupRecord.Verification.PASSED


def test_a_truncated_backup_fails_verification():
    make_rows()
    record = backup()
    path = backups.backup_path(record.filename)
    path.write_bytes(path.read_bytes()[: record.size // 2])

    with pytest.raises(CommandError, match="sha256") as raised:
        call_command("verify_backup", "--latest", verbosity=0)

    assert raised.value.returncode == 1
    record.refresh_from_db()
    assert record.verification == BackupRecord.Verification.FAILED
    assert scratch_databases() == []


def test_an_altered_backup_that_matches_its_record_still_fails_to_restore():
    """Corruption before the checksum was taken: the restore itself must catch it."""
    make_rows()
    record = backup()
    path = backups.backup_path(record.filename)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\x00" * 64
    path.write_bytes(bytes(data))
    BackupRecord.objects.filter(pk=record.pk).update(sha256=backups.file_sha256(path))

    with pytest.raises(CommandError, match="does not restore"):
        call_command("verify_backup", record.filename, verbosity=0)

    assert scratch_databases() == []


def test_row_counts_that_differ_from_the_record_fail_verification():
    make_rows()
    record = backup()
    counts = {**record.table_counts, "caloria_user": record.table_counts["caloria_user"] + 1}
    BackupRecord.objects.filter(pk=record.pk).update(table_counts=counts)

    with pytest.raises(CommandError, match="row counts differ: caloria_user"):
        call_command("verify_backup", record.filename, verbosity=0)

    assert scratch_databases() == []


def test_verify_backup_of_a_good_backup_exits_0_from_the_command_line():
    make_rows(users=1, entries_each=1)
    record = backup()

    completed = run_manage("verify_backup", record.filename)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(f"{record.filename}: ")


def test_verify_backup_needs_a_name_or_latest():
    with pytest.raises(CommandError, match="one of the arguments name --latest is required"):
        call_command("verify_backup")
    with pytest.raises(CommandError, match="No record of a successful backup named nope"):
        call_command("verify_backup", "nope")


# --------------------------------------------------------------------------- failures


def test_a_missing_pg_dump_gives_a_failed_record_one_line_and_no_cleanup():
    older = backup()

    completed = run_manage("dbbackup", "--clean", PATH="/nonexistent")

    assert completed.returncode == 1
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("CommandError: dbbackup failed:")
    assert "Traceback" not in completed.stderr
    failed = BackupRecord.objects.order_by("-id").first()
    assert failed.status == BackupRecord.Status.FAILED
    assert failed.error
    assert backups.backup_path(older.filename).exists()


def test_an_unwritable_backup_directory_gives_a_failed_record(tmp_path):
    not_a_directory = tmp_path / "backups"
    not_a_directory.write_text("a file, not a directory")

    completed = run_manage("dbbackup", DBOPS_BACKUP_DIR=str(not_a_directory))

    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    assert BackupRecord.objects.get().status == BackupRecord.Status.FAILED


def test_with_the_database_down_it_says_so_in_one_line_without_the_password():
    completed = run_manage(
        "dbbackup", DATABASE_URL="postgres://caloria:SECRETPW@127.0.0.1:1/caloria"
    )

    assert completed.returncode == 1
    assert "is unreachable (OperationalError)" in completed.stderr
    assert "SECRETPW" not in completed.stdout + completed.stderr
    assert "Traceback" not in completed.stderr


# --------------------------------------------------------------------------- admin


def recorded_backup(days_old: float, status="succeeded") -> BackupRecord:
    started = timezone.now() - timedelta(days=days_old)
    return BackupRecord.objects.create(
        started_at=started, finished_at=started, status=status, filename=f"b-{days_old}.psql.bin.gz"
    )


def test_the_admin_lists_backups_newest_first_read_only(client):
    recorded_backup(3)
    recorded_backup(1, status="failed")
    client.force_login(User.objects.create_superuser("staff", "s@example.com", "pw"))

    page = client.get("/admin/dbops/backuprecord/")
    add = client.get("/admin/dbops/backuprecord/add/")
    failed_only = client.get("/admin/dbops/backuprecord/?status__exact=failed")

    content = page.content.decode()
    assert page.status_code == 200
    assert content.index("Failed") < content.index("Succeeded")
    assert add.status_code == 403
    rows = failed_only.content.decode().split("<tbody>")[1].split("</tbody>")[0]
    assert "Failed" in rows
    assert "Succeeded" not in rows


def test_a_second_backup_under_a_taken_name_gets_a_name_and_metadata_of_its_own():
    name = "fixed-2026-01-01-000000.psql.bin.gz"
    first = backup("--output-filename", name)
    second = backup("--output-filename", name)

    assert first.filename == name
    assert second.filename != name
    assert second.filename.endswith(".psql.bin.gz")
    for record in (first, second):
        assert record.sha256 == backups.file_sha256(backups.backup_path(record.filename))
        assert backups.backup_path(record.filename + ".metadata").is_file()


def test_backup_files_are_written_where_the_settings_say():
    record = backup()

    assert Path(settings.DBOPS_BACKUP_DIR, record.filename).is_file()
    assert os.path.isabs(settings.DBOPS_BACKUP_DIR)
