"""Off-site copies of every backup, to a real OpenSSH server (tests/sshd.py) over SFTP,
with the real pg_dump and pg_restore against the real PostgreSQL server."""

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection

from caloria.models import FoodEntry, User
from dbops import backups, offsite, retention
from dbops.checks import check_off_site_and_encryption
from dbops.masking import safe_error
from dbops.models import BackupRecord
from tests.conftest import PROJECT_ROOT, clean_environment, closed_port, database_url
from tests.sshd import CutAfterBytes, keygen

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fresh_health_results"),
]

SFTP_PASSWORD = "sftp-Pa55word-never-shown"


def make_rows(users=2, entries_each=3):
    for n in range(users):
        user = User.objects.create(username=f"user{n}", email=f"user{n}@example.com")
        for m in range(entries_each):
            FoodEntry.objects.create(user=user, name=f"meal {n}-{m}", calories=100 + m)


def backup(*args) -> BackupRecord:
    call_command("dbbackup", *args, verbosity=0)
    return BackupRecord.objects.order_by("-id").first()


def failing_backup(*args) -> tuple[BackupRecord, CommandError]:
    with pytest.raises(CommandError) as failure:
        call_command("dbbackup", *args, verbosity=0)
    return BackupRecord.objects.order_by("-id").first(), failure.value


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def point_remote_at(settings, storage: dict) -> None:
    settings.STORAGES = {**settings.STORAGES, "dbbackup_remote": storage}


def scratch_databases() -> list[str]:
    pattern = connection.settings_dict["NAME"].replace("_", "\\_") + "\\_verify\\_%"
    with connection.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [pattern])
        return [row[0] for row in cursor.fetchall()]


def health(client) -> tuple[int, dict]:
    response = client.get("/health/", HTTP_ACCEPT="application/json")
    return response.status_code, response.json()


# --------------------------------------------------------------------------- the copy


def test_every_backup_is_copied_off_site_whole_and_checked(remote_storage):
    make_rows()

    record = backup()

    copy = remote_storage / record.filename
    assert record.remote_copy == BackupRecord.RemoteCopy.COPIED
    assert record.remote_name == record.filename
    assert record.remote_copied_at is not None
    assert "read back" in record.remote_detail
    assert sha256(copy) == record.sha256 == sha256(backups.backup_path(record.filename))
    assert copy.stat().st_mode & 0o777 == 0o600
    assert remote_storage.stat().st_mode & 0o777 == 0o700
    assert sorted(path.name for path in remote_storage.iterdir()) == [record.filename]


def test_without_a_remote_storage_nothing_is_copied_and_nothing_fails():
    record = backup()

    assert record.remote_copy == BackupRecord.RemoteCopy.NOT_CONFIGURED
    assert record.status == BackupRecord.Status.SUCCEEDED


def test_an_unreachable_remote_leaves_a_good_local_backup_a_failed_copy_and_exit_1(
    sshd, settings, tmp_path
):
    point_remote_at(settings, sshd.storage(tmp_path / "off-site", params={"port": closed_port()}))

    record, failure = failing_backup()

    assert failure.returncode == 1
    assert "is a good local backup, but its off-site copy to sftp://" in str(failure)
    assert "\n" not in str(failure)
    assert record.status == BackupRecord.Status.SUCCEEDED
    assert backups.backup_path(record.filename).is_file()
    assert record.remote_copy == BackupRecord.RemoteCopy.FAILED
    assert record.remote_copied_at is None
    assert "off-site copy to sftp://" in record.remote_detail
    assert "Unable to connect" in record.remote_detail


def test_a_remote_folder_that_cannot_be_made_fails_the_copy_and_leaves_nothing_there(
    sshd, settings, tmp_path
):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    point_remote_at(settings, sshd.storage(blocker / "backups"))

    record, failure = failing_backup()

    assert failure.returncode == 1
    assert record.remote_copy == BackupRecord.RemoteCopy.FAILED
    assert "is not a directory" in record.remote_detail
    assert blocker.read_text() == "not a folder"


def test_a_name_already_taken_on_the_remote_is_never_replaced_nor_deleted_by_retention(
    remote_storage, keep_only_the_newest
):
    first = backup()
    (remote_storage / first.filename).unlink()
    taken = remote_storage / "taken"
    taken.write_bytes(b"somebody else's file")
    first.filename = "taken"
    first.save()

    reason = offsite.copy_to_remote(first, backups.backup_path(first.remote_name))
    first.refresh_from_db()
    age_backup(first, 50)
    newer = backup("--clean")  # retention: `first` goes, locally and off-site

    first.refresh_from_db()
    assert "taken already exists on the remote: not replaced" in reason
    assert first.remote_copy == BackupRecord.RemoteCopy.FAILED
    assert first.remote_name == ""  # it names no file dbops did not write
    assert first.deleted_at is not None and first.remote_deleted_at is None
    assert taken.read_bytes() == b"somebody else's file"
    assert sorted(path.name for path in remote_storage.iterdir()) == sorted(
        ["taken", newer.filename]
    )


def test_health_fails_while_the_newest_backup_is_not_off_site_and_passes_after_a_good_one(
    client, sshd, settings, tmp_path
):
    settings.DBOPS_BACKUP_CHECK = True
    folder = tmp_path / "off-site"
    point_remote_at(settings, sshd.storage(folder, params={"port": closed_port()}))
    failing_backup()

    broken_status, broken = health(client)
    point_remote_at(settings, sshd.storage(folder))
    from dbops.health_runner import RECENT_RESULTS

    RECENT_RESULTS.clear()
    backup()
    good_status, good = health(client)

    assert broken_status == 500
    assert broken["BackupFresh()"] == "Unavailable: newest backup has no off-site copy"
    assert good_status == 200
    assert good["BackupFresh()"] == "OK"


# --------------------------------------------------------------------------- host keys


def test_a_host_missing_from_the_known_hosts_file_is_refused(sshd, settings, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    folder = tmp_path / "off-site"
    point_remote_at(settings, sshd.storage(folder, known_host_file=str(known_hosts)))

    record, failure = failing_backup()

    assert failure.returncode == 1
    assert f"is not in the known-hosts file {known_hosts}: refused" in record.remote_detail
    assert "ssh-ed25519 key SHA256:" in record.remote_detail
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1" in record.remote_detail
    assert known_hosts.read_text() == ""  # nothing added, unlike AutoAddPolicy
    assert not folder.exists()


def test_a_host_whose_key_changed_is_refused(sshd, settings, tmp_path):
    keygen(tmp_path / "impostor")
    impostor = " ".join((tmp_path / "impostor.pub").read_text().split()[:2])
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {impostor}\n")
    folder = tmp_path / "off-site"
    point_remote_at(settings, sshd.storage(folder, known_host_file=str(known_hosts)))

    record, _ = failing_backup()

    assert "offered a key that differs from the one in" in record.remote_detail
    assert not folder.exists()


def test_a_missing_known_hosts_file_is_refused_and_named(sshd, settings, tmp_path):
    missing = tmp_path / "no-such-known-hosts"
    point_remote_at(settings, sshd.storage(tmp_path / "x", known_host_file=str(missing)))

    record, _ = failing_backup()
    problems = [message.id for message in check_off_site_and_encryption()]

    assert f"the known-hosts file {missing} does not exist" in record.remote_detail
    assert problems == ["dbops.E010"]


# --------------------------------------------------------------------------- verify_backup


def test_verify_backup_remote_restores_the_off_site_copy_even_when_the_local_file_is_gone(
    remote_storage, capsys
):
    make_rows()
    record = backup()
    backups.backup_path(record.filename).unlink()

    call_command("verify_backup", record.filename, "--remote")

    record.refresh_from_db()
    assert record.verification == BackupRecord.Verification.PASSED
    assert "counts match" in record.verification_detail
    assert f"{record.filename} (off-site copy): restored" in capsys.readouterr().out
    assert scratch_databases() == []


def test_verify_backup_remote_refuses_an_altered_copy_restores_nothing_and_records_it(
    remote_storage, untouched_if_nothing_is_restored
):
    make_rows()
    record = backup()
    copy = remote_storage / record.filename
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))

    with pytest.raises(CommandError) as failure:
        call_command("verify_backup", record.filename, "--remote")

    record.refresh_from_db()
    assert failure.value.returncode == 1
    assert "the off-site copy is" in str(failure.value)
    assert "it was changed or truncated" in str(failure.value)
    assert record.remote_copy == BackupRecord.RemoteCopy.FAILED
    assert record.verification == BackupRecord.Verification.NOT_VERIFIED
    assert untouched_if_nothing_is_restored()  # no scratch database was made to restore into


def test_verify_backup_remote_of_a_backup_that_never_reached_the_remote_says_so(
    sshd, settings, tmp_path
):
    point_remote_at(settings, sshd.storage(tmp_path / "x", params={"port": closed_port()}))
    record, _ = failing_backup()

    with pytest.raises(CommandError, match="has no off-site copy to fetch") as failure:
        call_command("verify_backup", record.filename, "--remote")

    assert failure.value.returncode == 1


def test_fetch_backup_brings_the_off_site_copy_back_as_the_same_file(remote_storage, tmp_path):
    record = backup()

    fetched = offsite.fetch_backup(record, tmp_path / "fetched.psql.bin.gz", remote=True)

    assert sha256(fetched) == record.sha256
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []


# --------------------------------------------------------------------------- secrets


def test_the_remote_password_is_masked_in_every_message(sshd, settings, tmp_path):
    storage = sshd.storage(tmp_path / "x", params={"password": SFTP_PASSWORD})
    point_remote_at(settings, storage)

    text = safe_error(RuntimeError(f"login as root with {SFTP_PASSWORD} refused"))

    assert SFTP_PASSWORD not in text
    assert "login as root with" in text


def run_manage(*args, **variables):
    env_file = Path(settings.DBOPS_BACKUP_DIR).parent / "offsite-tests.env"
    env_file.write_text("")
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_ROOT,
        env=clean_environment(
            CALORIA_ENV="test",
            CALORIA_ENV_FILE=str(env_file),
            DATABASE_URL=database_url(connection.settings_dict),
            DBOPS_BACKUP_DIR=str(settings.DBOPS_BACKUP_DIR),
            **variables,
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_caloria_copies_off_site_to_the_url_of_its_environment_from_cron(sshd, tmp_path):
    folder = tmp_path / "from-env"
    variables = {
        "DBOPS_BACKUP_REMOTE_URL": f"sftp://{sshd.user}@127.0.0.1:{sshd.port}{folder}",
        "DBOPS_BACKUP_REMOTE_KEY_FILE": str(sshd.client_key),
        "DBOPS_BACKUP_REMOTE_KNOWN_HOSTS": str(sshd.known_hosts),
    }

    done = run_manage("dbbackup", "--quiet", **variables)

    record = BackupRecord.objects.order_by("-id").first()
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert sha256(folder / record.filename) == record.sha256


def test_a_failed_copy_exits_1_with_one_line_and_never_shows_the_password(sshd, tmp_path):
    port = closed_port()
    url = f"sftp://{sshd.user}:{SFTP_PASSWORD}@127.0.0.1:{port}{tmp_path / 'x'}"

    failed = run_manage(
        "dbbackup", "--quiet", DBOPS_BACKUP_REMOTE_URL=url,
        DBOPS_BACKUP_REMOTE_KNOWN_HOSTS=str(sshd.known_hosts),
    )  # fmt: skip

    record = BackupRecord.objects.order_by("-id").first()
    assert failed.returncode == 1
    assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert f"sftp://{sshd.user}@127.0.0.1:{port}/" in failed.stderr
    assert SFTP_PASSWORD not in failed.stdout + failed.stderr
    assert SFTP_PASSWORD not in json.dumps(
        BackupRecord.objects.filter(pk=record.pk).values().first(), default=str
    )


def test_a_remote_url_caloria_cannot_use_is_named_at_start(tmp_path):
    failed = run_manage("check", DBOPS_BACKUP_REMOTE_URL="ftp://user@example.test/backups")

    assert failed.returncode != 0
    assert "DBOPS_BACKUP_REMOTE_URL" in failed.stderr
    assert "must start with sftp://" in failed.stderr


def test_a_connection_cut_mid_upload_leaves_no_file_under_the_backup_name(sshd, settings, tmp_path):
    user = User.objects.create(username="big", email="big@example.com")
    FoodEntry.objects.bulk_create(
        FoodEntry(user=user, name=f"meal {n}", calories=n, notes=base64.b64encode(os.urandom(3000)))
        for n in range(300)
    )
    proxy = CutAfterBytes("127.0.0.1", sshd.port, limit=200_000)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{proxy.port} {sshd.host_public_key}\n")
    folder = tmp_path / "off-site"
    storage = sshd.storage(folder, params={"port": proxy.port}, known_host_file=str(known_hosts))
    point_remote_at(settings, storage)
    try:
        record, failure = failing_backup()
    finally:
        proxy.close()

    assert record.size > 300_000
    assert failure.returncode == 1
    assert record.remote_copy == BackupRecord.RemoteCopy.FAILED
    assert not (folder / record.filename).exists()
    # The cut came mid-upload: the hidden temporary file is all there is (its session died
    # with the connection, so it is left for an operator; nothing lists it as a backup).
    left = [path for path in folder.iterdir()]
    assert len(left) == 1 and left[0].name.startswith(".dbops-partial-")
    assert left[0].stat().st_size < record.size


def test_a_temporary_file_left_a_day_ago_goes_with_the_next_upload(remote_storage):
    remote_storage.mkdir(mode=0o700)
    stale = remote_storage / ".dbops-partial-leftbyacutupload"
    fresh = remote_storage / ".dbops-partial-anuploadrunningnow"
    for path in (stale, fresh):
        path.write_bytes(b"part of a backup")
    day_and_a_minute_ago = time.time() - 24 * 3600 - 60
    os.utime(stale, (day_and_a_minute_ago, day_and_a_minute_ago))

    record = backup()

    assert sorted(path.name for path in remote_storage.iterdir()) == [
        fresh.name,
        record.filename,
    ]


def test_a_remote_backend_that_cannot_load_is_a_failed_copy_in_one_line(settings):
    point_remote_at(settings, {"BACKEND": "storages.backends.nosuch.NoSuchStorage"})

    record, failure = failing_backup()
    problems = [message.id for message in check_off_site_and_encryption()]

    assert failure.returncode == 1
    assert record.status == BackupRecord.Status.SUCCEEDED
    assert record.remote_copy == BackupRecord.RemoteCopy.FAILED
    assert 'STORAGES["dbbackup_remote"] cannot be loaded' in record.remote_detail
    assert problems == ["dbops.E010"]


# --------------------------------------------------------------------------- retention


def age_backup(record: BackupRecord, days: int) -> None:
    started = record.started_at - timedelta(days=days)
    BackupRecord.objects.filter(pk=record.pk).update(started_at=started, finished_at=started)


@pytest.fixture
def keep_only_the_newest(settings):
    settings.DBOPS_BACKUP_KEEP_DAILY = settings.DBOPS_BACKUP_KEEP_WEEKLY = 0
    settings.DBOPS_BACKUP_KEEP_MONTHLY = settings.DBOPS_BACKUP_KEEP_DAYS = 0
    settings.DBOPS_BACKUP_KEEP_MIN = 1


def test_retention_never_deletes_the_remote_file_an_older_failed_copy_still_names(
    remote_storage, keep_only_the_newest
):
    """Before failed copies stopped naming a remote file, a copy refused because its name was
    taken kept that name on its record; such a record must not make retention delete it."""
    old = backup()
    (remote_storage / old.remote_name).unlink()
    taken = remote_storage / "taken"
    taken.write_bytes(b"somebody else's file")
    old.remote_name, old.remote_copy = "taken", BackupRecord.RemoteCopy.FAILED
    old.save()
    age_backup(old, 50)

    backup("--clean")

    old.refresh_from_db()
    assert old.deleted_at is not None and old.remote_deleted_at is None
    assert taken.read_bytes() == b"somebody else's file"


def test_retention_deletes_an_old_off_site_copy_on_the_sftp_server(
    remote_storage, keep_only_the_newest
):
    old = backup()
    age_backup(old, 50)

    new = backup("--clean")

    old.refresh_from_db()
    assert old.remote_deleted_at is not None
    assert not (remote_storage / old.remote_name).exists()
    assert (remote_storage / new.remote_name).exists()


def test_retention_never_connects_to_a_host_the_known_hosts_file_does_not_hold(
    sshd, settings, remote_storage, keep_only_the_newest, tmp_path
):
    old = backup()
    age_backup(old, 50)
    backup()
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    point_remote_at(settings, sshd.storage(remote_storage, known_host_file=str(empty)))

    outcome = retention.apply_retention()

    old.refresh_from_db()
    assert old.remote_deleted_at is None
    assert (remote_storage / old.remote_name).exists()
    assert len(outcome.problems) == 1
    assert f"is not in the known-hosts file {empty}: refused" in outcome.problems[0]
    assert empty.read_text() == ""
