"""An off-site copy that reads back differently from what was sent is a failed copy: a real
sshd whose SFTP server damages what it stores (tests/damaging_sftp_server.py), through both
of dbops' SFTP transfers, and a django-storages backend that damages what it saves
(tests/corrupting_storage.py); the real pg_dump and PostgreSQL server."""

import sys

import pytest

from dbops import backups
from dbops.models import BackupRecord
from tests.commands.test_offsite_backups import failing_backup, health, make_rows, point_remote_at
from tests.conftest import PROJECT_ROOT

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fresh_health_results"),
]

DIFFERS = "the copy read back from the remote differs"


@pytest.fixture(scope="module")
def damaging_sshd():
    from tests.sshd import running_sshd

    subsystem = f"{sys.executable} {PROJECT_ROOT / 'tests' / 'damaging_sftp_server.py'}"
    with running_sshd(sftp_subsystem=subsystem) as server:
        yield server


def assert_a_failed_copy_that_health_reports(record, failure, client, settings) -> None:
    assert failure.returncode == 1
    assert "is a good local backup, but its off-site copy to " in str(failure)
    assert DIFFERS in str(failure)
    assert record.status == BackupRecord.Status.SUCCEEDED
    assert backups.backup_path(record.filename).is_file()
    assert record.remote_copy == BackupRecord.RemoteCopy.FAILED
    assert record.remote_copied_at is None
    assert DIFFERS in record.remote_detail
    assert f"sent {record.size:,} bytes, {record.sha256[:12]}…" in record.remote_detail
    settings.DBOPS_BACKUP_CHECK = True
    status, checks = health(client)
    assert status == 500
    assert checks["BackupFresh()"] == "Unavailable: newest backup has no off-site copy"


@pytest.mark.parametrize("transfer", ["openssh", "paramiko"])
def test_an_sftp_server_that_stores_other_bytes_fails_the_copy_and_keeps_none_of_it(
    transfer, damaging_sshd, settings, client, tmp_path
):
    if transfer == "paramiko":
        settings.DBOPS_BACKUP_REMOTE_SFTP_PROGRAM = ""
    folder = tmp_path / "off-site"
    point_remote_at(settings, damaging_sshd.storage(folder))
    make_rows()

    record, failure = failing_backup()

    assert_a_failed_copy_that_health_reports(record, failure, client, settings)
    assert "off-site copy to sftp://" in record.remote_detail
    assert list(folder.iterdir()) == []  # neither the damaged copy nor its temporary file


def test_a_storage_that_saves_other_bytes_fails_the_copy_and_removes_it(settings, client, tmp_path):
    folder = tmp_path / "off-site"
    point_remote_at(
        settings,
        {
            "BACKEND": "tests.corrupting_storage.CorruptingStorage",
            "OPTIONS": {"location": str(folder)},
        },
    )
    make_rows()

    record, failure = failing_backup()

    assert_a_failed_copy_that_health_reports(record, failure, client, settings)
    assert 'off-site copy to STORAGES["dbbackup_remote"] (CorruptingStorage)' in (
        record.remote_detail
    )
    assert list(folder.iterdir()) == []
