"""Retention end to end: `dbbackup --clean` (and `--dry-run`) with real files in the local
directory and in a second FileSystemStorage configured as the remote, STORAGES["dbbackup_remote"];
the admin's Keep / Stop keeping actions."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.admin.models import LogEntry
from django.core.files.storage import FileSystemStorage
from django.core.management import CommandError, call_command
from django.utils import timezone

from caloria.models import User
from dbops import backups
from dbops.models import BackupRecord

pytestmark = pytest.mark.django_db(transaction=True)

ONLY_MIN = {"DBOPS_BACKUP_KEEP_DAILY": 0, "DBOPS_BACKUP_KEEP_WEEKLY": 0}


@pytest.fixture
def remote(settings, tmp_path) -> Path:
    """A second local storage standing in for the off-site one."""
    folder = tmp_path / "remote"
    folder.mkdir()
    settings.STORAGES = {
        **settings.STORAGES,
        "dbbackup_remote": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(folder)},
        },
    }
    return folder


@pytest.fixture
def policy(settings):
    def set_policy(**values):
        for name, value in values.items():
            setattr(settings, name, value)

    set_policy(
        DBOPS_BACKUP_KEEP_DAILY=7,
        DBOPS_BACKUP_KEEP_WEEKLY=4,
        DBOPS_BACKUP_KEEP_MONTHLY=0,
        DBOPS_BACKUP_KEEP_MIN=1,
        DBOPS_BACKUP_KEEP_DAYS=0,
    )
    return set_policy


def old_backup(days: float, name: str, remote: Path | None = None, **fields) -> BackupRecord:
    """A successful backup `days` old with its file and .metadata (and its remote copy)."""
    started = timezone.now() - timedelta(days=days)
    for suffix in ("", ".metadata"):
        backups.backup_path(name + suffix).write_bytes(b"a backup")
    if remote is not None:
        (remote / "offsite").mkdir(exist_ok=True)
        (remote / "offsite" / name).write_bytes(b"a backup")
        fields.update(remote_name=f"offsite/{name}", remote_copy=BackupRecord.RemoteCopy.COPIED)
    return BackupRecord.objects.create(
        started_at=started, finished_at=started, status="succeeded", filename=name, **fields
    )


def clean(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("dbbackup", "--clean", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_clean_deletes_what_no_tier_keeps_locally_and_remotely_and_marks_the_records(
    policy, remote
):
    policy(**ONLY_MIN)
    old = old_backup(40, "old.psql.bin.gz", remote)
    kept_verified = old_backup(60, "verified.psql.bin.gz", remote, verification="passed")
    older = old_backup(90, "older.psql.bin.gz", remote)

    out, _ = clean()

    new = BackupRecord.objects.order_by("-id").first()
    for record in (old, older):
        record.refresh_from_db()
        assert record.deleted_at is not None and record.remote_deleted_at is not None
        assert not backups.backup_path(record.filename).exists()
        assert not backups.backup_path(record.filename + ".metadata").exists()
        assert not (remote / record.remote_name).exists()
        assert f"Deleted {record.filename} (local file and off-site copy): older than" in out
    kept_verified.refresh_from_db()
    assert kept_verified.deleted_at is None and kept_verified.remote_deleted_at is None
    assert (remote / kept_verified.remote_name).exists()
    assert backups.backup_path(new.filename).exists()
    assert BackupRecord.objects.count() == 4


def test_dry_run_lists_every_decision_and_why_takes_no_backup_and_deletes_nothing(policy, remote):
    policy(DBOPS_BACKUP_KEEP_DAILY=1, DBOPS_BACKUP_KEEP_WEEKLY=0, DBOPS_BACKUP_KEEP_MIN=0)
    today = old_backup(0.01, "today.psql.bin.gz", remote)
    pinned = old_backup(400, "pinned.psql.bin.gz", remote, pinned=True)
    going = old_backup(300, "going.psql.bin.gz", remote)
    files_before = sorted(p.name for p in backups.backup_path("x").parent.iterdir())

    out, _ = clean("--dry-run")

    day = timezone.now() - timedelta(days=0.01)
    assert out.splitlines() == [
        f"would keep {today.filename}: daily 1 of 1: the newest of {day.date().isoformat()}",
        f"would delete {going.filename}: older than the tiers keep (1 daily, 0 weekly, "
        "0 monthly, the 0 newest)",
        f"would keep {pinned.filename}: pinned (kept from the admin)",
    ]
    assert BackupRecord.objects.count() == 3
    assert sorted(p.name for p in backups.backup_path("x").parent.iterdir()) == files_before
    assert (remote / going.remote_name).exists()
    assert BackupRecord.objects.filter(deleted_at__isnull=False).count() == 0


def test_dry_run_goes_with_clean_alone():
    for args in (("--dry-run",), ("--clean", "--dry-run", "--verify")):
        with pytest.raises(CommandError, match="--dry-run goes with --clean alone") as raised:
            call_command("dbbackup", *args, verbosity=0)
        assert raised.value.returncode == 2
    assert BackupRecord.objects.count() == 0


def test_records_decide_not_file_names(policy):
    """A backup under a name nothing would match is still kept or deleted by its record, and
    a file with no record is never touched."""
    policy(**ONLY_MIN)
    renamed = old_backup(50, "renamed by hand.bin")
    stray = backups.backup_path("default-vm-2020-01-01-000000.psql.bin.gz")
    stray.write_bytes(b"no record")

    clean()

    renamed.refresh_from_db()
    assert renamed.deleted_at is not None
    assert not backups.backup_path(renamed.filename).exists()
    assert stray.exists()


def test_a_remote_copy_that_cannot_be_deleted_fails_the_clean_and_is_tried_again(policy, remote):
    policy(**ONLY_MIN)
    record = old_backup(50, "stuck.psql.bin.gz", remote)
    # A non-empty directory in place of the copy: the storage's delete fails.
    (remote / record.remote_name).unlink()
    (remote / record.remote_name).mkdir()
    (remote / record.remote_name / "x").write_bytes(b"")

    with pytest.raises(CommandError) as raised:
        clean()

    assert raised.value.returncode == 1
    assert str(raised.value).startswith(
        "retention could not delete everything it should: stuck.psql.bin.gz: off-site copy "
        "offsite/stuck.psql.bin.gz not deleted: "
    )
    record.refresh_from_db()
    assert record.deleted_at is not None
    assert record.remote_deleted_at is None
    (remote / record.remote_name / "x").unlink()
    (remote / record.remote_name).rmdir()

    clean()

    record.refresh_from_db()
    assert record.remote_deleted_at is not None


class UnreachableStorage(FileSystemStorage):
    """A remote that takes the new backup's copy but cannot delete, with an error that names a
    secret, as a library's error text may."""

    def delete(self, name):
        raise OSError(f"cannot reach sftp://backup:{django_settings.SECRET_KEY}@offsite/{name}")


def test_a_remote_error_is_reported_without_the_secrets_it_names(policy, settings, tmp_path):
    policy(**ONLY_MIN)
    settings.STORAGES = {
        **settings.STORAGES,
        "dbbackup_remote": {
            "BACKEND": f"{__name__}.UnreachableStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    old_backup(50, "secret.psql.bin.gz")
    BackupRecord.objects.update(
        remote_name="offsite/secret.psql.bin.gz", remote_copy=BackupRecord.RemoteCopy.COPIED
    )
    (tmp_path / "offsite").mkdir()
    (tmp_path / "offsite" / "secret.psql.bin.gz").write_bytes(b"an old copy")

    with pytest.raises(CommandError) as raised:
        clean()

    assert "off-site copy offsite/secret.psql.bin.gz not deleted: cannot reach" in str(raised.value)
    assert settings.SECRET_KEY not in str(raised.value)


def test_without_a_remote_storage_remote_copies_are_left_and_a_line_says_so(policy):
    policy(**ONLY_MIN)
    record = old_backup(50, "remote-elsewhere.psql.bin.gz")
    BackupRecord.objects.filter(pk=record.pk).update(
        remote_name="offsite/remote-elsewhere", remote_copy=BackupRecord.RemoteCopy.COPIED
    )

    _, err = clean()

    record.refresh_from_db()
    assert record.deleted_at is not None
    assert record.remote_deleted_at is None
    assert "off-site copy offsite/remote-elsewhere left in place: no remote storage" in err


def test_keep_days_keeps_a_window_on_top_of_the_tiers(policy):
    policy(**ONLY_MIN, DBOPS_BACKUP_KEEP_DAYS=10)
    young = old_backup(9, "young.psql.bin.gz")
    old = old_backup(11, "old.psql.bin.gz")

    clean()

    young.refresh_from_db()
    old.refresh_from_db()
    assert young.deleted_at is None and old.deleted_at is not None


# --------------------------------------------------------------------------- the admin's pin


def test_keep_from_the_admin_pins_a_backup_retention_then_never_deletes_it(policy, client):
    policy(**ONLY_MIN)
    record = old_backup(500, "precious.psql.bin.gz")
    staff = User.objects.create_superuser("staff", "s@example.com", "pw")
    client.force_login(staff)

    page = client.get("/admin/dbops/backuprecord/")
    response = client.post(
        "/admin/dbops/backuprecord/",
        {"action": "keep", "_selected_action": [record.pk]},
        follow=True,
    )

    assert "Keep: never delete by retention" in page.content.decode()
    assert response.status_code == 200
    record.refresh_from_db()
    assert record.pinned
    entry = LogEntry.objects.get(object_id=str(record.pk))
    assert entry.user == staff and "Kept" in entry.get_change_message()
    out, _ = clean()
    record.refresh_from_db()
    assert record.deleted_at is None
    assert f"Deleted {record.filename}" not in out
    assert backups.backup_path(record.filename).exists()

    client.post(
        "/admin/dbops/backuprecord/", {"action": "stop_keeping", "_selected_action": [record.pk]}
    )
    clean()

    record.refresh_from_db()
    assert not record.pinned
    assert record.deleted_at is not None


def test_staff_who_may_only_view_backups_cannot_pin_them(client):
    from django.contrib.auth.models import Permission

    record = old_backup(5, "viewed.psql.bin.gz")
    viewer = User.objects.create_user("viewer", "v@example.com", "pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_backuprecord"))
    client.force_login(viewer)

    page = client.get("/admin/dbops/backuprecord/")
    client.post("/admin/dbops/backuprecord/", {"action": "keep", "_selected_action": [record.pk]})

    assert page.status_code == 200
    assert "Keep: never delete by retention" not in page.content.decode()
    record.refresh_from_db()
    assert not record.pinned
