"""Which client moves an off-site copy's bytes: OpenSSH's `sftp` when the storage
authenticates with a key, dbops' own paramiko session otherwise; both read the copy back and
bring it home whole, against the real test sshd."""

import hashlib
import shutil
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from caloria.models import FoodEntry, User
from dbops import backups
from dbops.models import BackupRecord

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fresh_health_results"),
]


@pytest.fixture
def logged_sftp(tmp_path, settings):
    """DBOPS_BACKUP_REMOTE_SFTP_PROGRAM: OpenSSH's sftp behind a script that logs each batch
    it is given; the log's path."""
    log = tmp_path / "sftp-batches.log"
    program = tmp_path / "logged-sftp"
    program.write_text(f'#!/bin/sh\ntee -a {log} | {shutil.which("sftp")} "$@"\n')
    program.chmod(0o700)
    settings.DBOPS_BACKUP_REMOTE_SFTP_PROGRAM = str(program)
    return log


def backup_with_rows() -> BackupRecord:
    user = User.objects.create(username="eater", email="eater@example.com")
    FoodEntry.objects.bulk_create(
        FoodEntry(user=user, name=f"meal {n}", calories=n) for n in range(200)
    )
    call_command("dbbackup", verbosity=0)
    return BackupRecord.objects.order_by("-id").first()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_copied_read_back_and_verified(record: BackupRecord, folder: Path) -> None:
    assert record.remote_copy == BackupRecord.RemoteCopy.COPIED, record.remote_detail
    assert sha256(folder / record.filename) == record.sha256
    assert (folder / record.filename).stat().st_mode & 0o777 == 0o600
    assert sorted(path.name for path in folder.iterdir()) == [record.filename]
    assert not [path for path in backups.backup_path("").iterdir() if path.name[0] == "."]
    backups.backup_path(record.filename).unlink()
    call_command("verify_backup", record.filename, "--remote", verbosity=0)
    record.refresh_from_db()
    assert record.verification == BackupRecord.Verification.PASSED


def test_a_key_authenticated_copy_goes_through_openssh_both_ways(remote_storage, logged_sftp):
    record = backup_with_rows()

    assert_copied_read_back_and_verified(record, remote_storage)
    batches = logged_sftp.read_text().splitlines()
    assert [line.split()[0] for line in batches] == ["put", "get", "get"]
    assert record.filename in batches[2]


def test_without_openssh_paramiko_copies_reads_back_and_fetches(remote_storage, settings):
    settings.DBOPS_BACKUP_REMOTE_SFTP_PROGRAM = ""

    assert_copied_read_back_and_verified(backup_with_rows(), remote_storage)


def test_a_configured_sftp_program_that_is_missing_fails_the_copy_and_names_it(
    remote_storage, settings
):
    settings.DBOPS_BACKUP_REMOTE_SFTP_PROGRAM = "/nowhere/sftp"

    with pytest.raises(CommandError):
        call_command("dbbackup", verbosity=0)

    record = BackupRecord.objects.order_by("-id").first()
    assert record.status == BackupRecord.Status.SUCCEEDED
    assert backups.backup_path(record.filename).is_file()
    assert record.remote_copy == BackupRecord.RemoteCopy.FAILED
    assert "DBOPS_BACKUP_REMOTE_SFTP_PROGRAM is '/nowhere/sftp'" in record.remote_detail
    assert not remote_storage.exists() or not list(remote_storage.iterdir())


def test_a_storage_with_a_password_never_hands_it_to_openssh(sshd, settings, tmp_path, logged_sftp):
    folder = tmp_path / "off-site"
    storage = sshd.storage(folder, params={"password": "not-for-openssh"})
    settings.STORAGES = {**settings.STORAGES, "dbbackup_remote": storage}

    assert_copied_read_back_and_verified(backup_with_rows(), folder)
    assert not logged_sftp.exists()
