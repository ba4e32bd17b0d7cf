"""Backups proven by checksums, not only counts, and read back before they count: the real
pg_dump, pg_restore and PostgreSQL server, files damaged as a disk or a storage would."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection

from caloria.models import FoodEntry
from dbops import backups
from dbops.models import BackupRecord
from dbops.table_checksums import table_checksums
from tests import pg_driver
from tests.commands.test_backups import make_rows, scratch_databases
from tests.conftest import PROJECT_ROOT, clean_environment, database_url

pytestmark = pytest.mark.django_db(transaction=True)


def backup(*args) -> BackupRecord:
    call_command("dbbackup", *args, verbosity=0)
    return BackupRecord.objects.order_by("-id").first()


def run_manage(*args, **variables) -> subprocess.CompletedProcess:
    env_file = Path(settings.DBOPS_BACKUP_DIR).parent / "backup-checksums.env"
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


def admin(*statements: str, database: str = "postgres") -> None:
    session = pg_driver.connect(database_url(connection.settings_dict, NAME=database))
    session.autocommit = True
    try:
        with session.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        session.close()


def replace_with_altered_copy(record: BackupRecord, change: str, tmp_path: Path) -> None:
    """Restore the backup elsewhere, change it, dump it again in the same format and
    compression in place of the file, and fix the record's sha256 and size: only the
    checksums can tell."""
    path = backups.backup_path(record.filename)
    elsewhere = f"{connection.settings_dict['NAME'][:40]}_altered"
    url = database_url(connection.settings_dict, NAME=elsewhere)
    admin(f'DROP DATABASE IF EXISTS "{elsewhere}" WITH (FORCE)', f'CREATE DATABASE "{elsewhere}"')
    original = tmp_path / "original.dump"
    with gzip.open(path, "rb") as source, original.open("wb") as target:
        shutil.copyfileobj(source, target)
    try:
        subprocess.run(
            ["pg_restore", "--no-owner", "--exit-on-error", "-d", url, str(original)],
            check=True,
            timeout=60,
        )
        admin(change, database=elsewhere)
        dumped = tmp_path / "altered.dump"
        subprocess.run(["pg_dump", "--format=custom", "-f", str(dumped), url], check=True)
    finally:
        admin(f'DROP DATABASE IF EXISTS "{elsewhere}" WITH (FORCE)')
    with dumped.open("rb") as source, gzip.open(path, "wb") as target:
        shutil.copyfileobj(source, target)
    BackupRecord.objects.filter(pk=record.pk).update(
        sha256=backups.file_sha256(path), size=path.stat().st_size
    )


# --------------------------------------------------------------------------- at backup time


def test_a_backup_records_every_tables_checksum_and_count_from_one_pass():
    make_rows(users=3, entries_each=4)

    record = backup()

    now = table_checksums(connection)
    # Only the backup's own record changed since (it was running in the snapshot).
    assert [t for t in now if now[t] != record.table_checksums[t]] == ["dbops_backuprecord"]
    assert sorted(now) == sorted(record.table_checksums)
    assert record.table_counts == {
        table: value["rows"] for table, value in record.table_checksums.items()
    }
    assert record.table_counts["caloria_foodentry"] == 12
    assert "django_migrations" in record.table_checksums


def test_dbbackup_verify_compares_counts_and_checksums():
    make_rows()

    record = backup("--verify")

    assert record.verification == BackupRecord.Verification.PASSED
    assert "counts match, checksums match" in record.verification_detail


# --------------------------------------------------------------------------- verification


def test_one_value_changed_inside_the_backup_fails_verification_naming_its_table(tmp_path):
    make_rows(users=2, entries_each=3)
    record = backup()
    first = FoodEntry.objects.order_by("id").first()
    replace_with_altered_copy(
        record,
        f"UPDATE caloria_foodentry SET calories = calories + 1 WHERE id = {first.pk}",
        tmp_path,
    )

    with pytest.raises(CommandError) as raised:
        call_command("verify_backup", record.filename, verbosity=0)

    message = str(raised.value)
    assert raised.value.returncode == 1
    assert "checksums differ: caloria_foodentry (counts equal: 6 at backup, 6 restored)" in message
    assert "row counts differ" not in message
    assert "caloria_user" not in message
    record.refresh_from_db()
    assert record.verification == BackupRecord.Verification.FAILED
    assert "caloria_foodentry" in record.verification_detail
    assert scratch_databases() == []


def test_a_row_missing_inside_the_backup_says_the_counts_differ_too(tmp_path):
    make_rows(users=2, entries_each=3)
    record = backup()
    replace_with_altered_copy(
        record, "DELETE FROM caloria_foodentry WHERE id = (SELECT max(id) FROM caloria_foodentry)",
        tmp_path,
    )  # fmt: skip

    completed = run_manage("verify_backup", record.filename)

    assert completed.returncode == 1
    assert "row counts differ: caloria_foodentry: 6 at backup, 5 restored" in completed.stderr
    assert "caloria_foodentry (counts differ: 6 at backup, 5 restored)" in completed.stderr


def test_verify_backup_help_says_it_compares_counts_and_checksums():
    completed = run_manage("help", "verify_backup")

    assert completed.returncode == 0, completed.stderr
    assert "row count and checksum with the record" in " ".join(completed.stdout.split())


def test_a_backup_recorded_before_checksums_still_verifies_by_counts_and_says_so():
    make_rows()
    record = backup()
    BackupRecord.objects.filter(pk=record.pk).update(table_checksums={})

    call_command("verify_backup", record.filename, verbosity=0)

    record.refresh_from_db()
    assert record.verification == BackupRecord.Verification.PASSED
    assert "counts match (no checksums recorded: compared by counts only)" in (
        record.verification_detail
    )


# --------------------------------------------------------------------------- read back


def failed_run(completed, files_before: set[Path]) -> tuple[str, BackupRecord]:
    """What every failed dbbackup leaves, here checked once: exit 1 with one CommandError
    line and no traceback, one FAILED record, no file (nor work folder) in the backup folder.
    Returns that line and the record."""
    assert completed.returncode == 1, completed.stderr
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith("CommandError: dbbackup failed: ")
    assert "Traceback" not in completed.stderr
    failed = BackupRecord.objects.get()
    assert failed.status == BackupRecord.Status.FAILED
    assert set(Path(settings.DBOPS_BACKUP_DIR).iterdir()) == files_before
    return last, failed


def test_a_backup_damaged_on_its_way_to_the_disk_is_a_failed_run_and_leaves_no_file():
    before = set(Path(settings.DBOPS_BACKUP_DIR).iterdir())

    completed = run_manage("dbbackup", DJANGO_SETTINGS_MODULE="tests.corrupting_settings")

    last, failed = failed_run(completed, before)
    assert "does not read back" in last
    assert "does not read back" in failed.error


def test_an_encrypted_backup_damaged_on_its_way_to_the_disk_is_a_failed_run(gpg_keys):
    before = set(Path(settings.DBOPS_BACKUP_DIR).iterdir())

    completed = run_manage(
        "dbbackup", "--encrypt", DJANGO_SETTINGS_MODULE="tests.corrupting_settings",
        DBOPS_BACKUP_GPG_PUBLIC_KEY=str(gpg_keys["backups"].public_key),
    )  # fmt: skip

    last, _ = failed_run(completed, before)
    assert ".gpg does not read back: the stored file (sha256 " in last
    assert "is not what gpg wrote" in last


def path_with_a_pg_dump_cut_short(tmp_path) -> str:
    """A PATH whose pg_dump's output is cut short while the pipeline still exits 0: the gzip
    is whole, the archive is not, and only pg_restore --list can tell."""
    fake = tmp_path / "bin"
    fake.mkdir()
    script = fake / "pg_dump"
    script.write_text(f'#!/bin/sh\n"{shutil.which("pg_dump")}" "$@" | head -c 300\n')
    script.chmod(0o755)
    return f"{fake}:{Path(shutil.which('pg_restore')).parent}:/usr/bin:/bin"


def test_a_dump_that_pg_restore_cannot_list_is_a_failed_run(tmp_path):
    make_rows()
    before = set(Path(settings.DBOPS_BACKUP_DIR).iterdir())

    completed = run_manage("dbbackup", PATH=path_with_a_pg_dump_cut_short(tmp_path))

    last, _ = failed_run(completed, before)
    assert "does not read back: pg_restore: error:" in last


def test_an_encrypted_backup_of_a_dump_that_pg_restore_cannot_list_is_a_failed_run(
    tmp_path, gpg_keys
):
    """The server cannot read its ciphertext back, so the plain dump is listed before it is
    encrypted: without --verify, nothing else would notice."""
    make_rows()
    before = set(Path(settings.DBOPS_BACKUP_DIR).iterdir())

    completed = run_manage(
        "dbbackup", "--encrypt", PATH=path_with_a_pg_dump_cut_short(tmp_path),
        DBOPS_BACKUP_GPG_PUBLIC_KEY=str(gpg_keys["backups"].public_key),
    )  # fmt: skip

    last, failed = failed_run(completed, before)
    assert ".psql.bin.gz does not read back: pg_restore: error:" in last
    assert "does not read back" in failed.error
    assert failed.filename == "" and not failed.encrypted


def test_rows_committed_while_pg_dump_runs_are_in_neither_the_dump_nor_the_checksums(tmp_path):
    """pg_dump is started with a row committed just before it runs (a wrapper commits it
    through psql): the snapshot, exported earlier, holds neither; so the counts and checksums
    are those of the dump, and --verify passes."""
    make_rows(users=1, entries_each=2)
    fake = tmp_path / "bin"
    fake.mkdir()
    insert = (
        "INSERT INTO caloria_foodentry (user_id, eaten_at, name, calories, meal, notes, "
        "created_at) SELECT min(id), now(), 'late', 1, '', '', now() FROM caloria_user"
    )
    script = fake / "pg_dump"
    script.write_text(
        f'#!/bin/sh\n"{shutil.which("psql")}" -q "$LATE_URL" -c "{insert}" || exit 9\n'
        f'exec "{shutil.which("pg_dump")}" "$@"\n'
    )
    script.chmod(0o755)

    completed = run_manage(
        "dbbackup",
        "--verify",
        PATH=f"{fake}:{Path(shutil.which('pg_restore')).parent}:/usr/bin:/bin",
        LATE_URL=database_url(connection.settings_dict),
    )

    assert completed.returncode == 0, completed.stderr
    assert FoodEntry.objects.count() == 3
    record = BackupRecord.objects.get()
    assert record.table_counts["caloria_foodentry"] == 2
    assert record.table_checksums["caloria_foodentry"]["rows"] == 2
    assert record.verification == BackupRecord.Verification.PASSED
