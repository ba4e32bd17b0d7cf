"""Backups encrypted to a public key with the real gpg (keys made at test time, see
tests/gpg_keys.py), verified before encryption, and decrypted only with the private key the
operator brings; against the real PostgreSQL, pg_dump and pg_restore, and a real sshd."""

import gzip
import json

import pytest
from django.core.management import CommandError, call_command

from caloria.models import FoodEntry, User
from dbops import backups, offsite
from dbops.checks import check_off_site_and_encryption
from dbops.models import BackupRecord
from tests.commands.test_offsite_backups import run_manage, scratch_databases, sha256

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def public_key(settings, gpg_keys):
    settings.DBOPS_BACKUP_GPG_PUBLIC_KEY = str(gpg_keys["backups"].public_key)
    return gpg_keys["backups"]


def make_rows():
    user = User.objects.create(username="secretive", email="s@example.com")
    for m in range(5):
        FoodEntry.objects.create(user=user, name=f"private meal {m}", calories=100 + m)


def backup(*args) -> BackupRecord:
    call_command("dbbackup", *args, verbosity=0)
    return BackupRecord.objects.order_by("-id").first()


def verify(*args):
    with pytest.raises(CommandError) as failure:
        call_command("verify_backup", *args)
    return failure.value


def private_key_lines(key_pair) -> list[str]:
    lines = key_pair.private_key.read_text().splitlines()
    return [line for line in lines if len(line) > 40]


def leftovers(folder) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


def test_an_encrypted_backup_stores_only_ciphertext_verified_before_encryption(public_key):
    make_rows()

    record = backup("--encrypt", "--verify")

    path = backups.backup_path(record.filename)
    data = path.read_bytes()
    assert record.filename.endswith(".psql.bin.gz.gpg")
    assert record.encrypted is True
    assert record.encryption_key == public_key.fingerprint
    assert record.sha256 == sha256(path) and record.size == len(data)
    assert data[:2] != b"\x1f\x8b"  # not gzip: ciphertext
    assert b"private meal" not in data
    assert record.verification == BackupRecord.Verification.PASSED
    assert "counts match" in record.verification_detail
    assert path.stat().st_mode & 0o777 == 0o600
    assert leftovers(path.parent) == []  # the plain copy kept for --verify is gone
    assert backups.backup_path(record.filename + ".metadata").is_file()


def test_the_setting_encrypts_every_backup_without_the_option(settings, public_key):
    settings.DBOPS_BACKUP_ENCRYPT = True

    record = backup()

    assert record.encrypted and record.filename.endswith(".gpg")


def test_the_private_key_decrypts_what_the_server_cannot_round_trip(
    public_key, tmp_path, untouched_if_nothing_is_restored
):
    make_rows()
    record = backup("--encrypt")

    fetched = offsite.fetch_backup(
        record, tmp_path / "plain.psql.bin.gz", remote=False, private_key=public_key.private_key
    )
    call_command("verify_backup", record.filename, "--private-key", str(public_key.private_key))

    record.refresh_from_db()
    with gzip.open(fetched) as plain:
        assert plain.read(5) == b"PGDMP"  # pg_dump's custom format
    assert record.verification == BackupRecord.Verification.PASSED
    assert not untouched_if_nothing_is_restored()  # the restore into a scratch database ran
    assert scratch_databases() == []
    assert leftovers(tmp_path) == []


def test_an_encrypted_off_site_copy_is_verified_with_the_private_key(public_key, remote_storage):
    make_rows()
    record = backup("--encrypt")
    backups.backup_path(record.filename).unlink()

    call_command(
        "verify_backup", record.filename, "--remote", "--private-key", str(public_key.private_key)
    )

    record.refresh_from_db()
    assert sha256(remote_storage / record.filename) == record.sha256
    assert record.verification == BackupRecord.Verification.PASSED


def test_verifying_an_encrypted_backup_without_the_key_says_what_it_needs(public_key):
    record = backup("--encrypt")

    failure = verify(record.filename)

    assert failure.returncode == 1
    assert "is encrypted" in str(failure) and "--private-key FILE" in str(failure)
    record.refresh_from_db()
    assert record.verification == BackupRecord.Verification.NOT_VERIFIED


def assert_nothing_restored(record, untouched_if_nothing_is_restored) -> None:
    """No scratch database was made to restore into, and the record's verification is as
    it was (a verification that restores always records its outcome)."""
    assert untouched_if_nothing_is_restored()
    record.refresh_from_db()
    assert record.verification == BackupRecord.Verification.NOT_VERIFIED
    assert record.verified_at is None and record.verification_detail == ""
    assert leftovers(backups.backup_path(record.filename).parent) == []  # no plain copy left


def test_a_wrong_private_key_is_refused_and_nothing_is_restored(
    public_key, gpg_keys, untouched_if_nothing_is_restored
):
    record = backup("--encrypt")

    failure = verify(record.filename, "--private-key", str(gpg_keys["other"].private_key))

    assert failure.returncode == 1
    assert f"{record.filename}: verification failed: the private key file " in str(failure)
    assert "is not the key this backup was encrypted to" in str(failure)
    assert public_key.fingerprint in str(failure)
    assert_nothing_restored(record, untouched_if_nothing_is_restored)


def test_a_public_key_given_as_the_private_key_is_refused(public_key):
    record = backup("--encrypt")

    failure = verify(record.filename, "--private-key", str(public_key.public_key))

    assert "holds no private key" in str(failure)


def test_a_truncated_encrypted_backup_is_refused_before_decryption(
    public_key, untouched_if_nothing_is_restored
):
    make_rows()
    record = backup("--encrypt")
    path = backups.backup_path(record.filename)
    path.write_bytes(path.read_bytes()[:-40])

    failure = verify(record.filename, "--private-key", str(public_key.private_key))

    assert failure.returncode == 1
    assert "it was changed or truncated" in str(failure)
    assert_nothing_restored(record, untouched_if_nothing_is_restored)


def test_gpg_itself_refuses_a_truncated_file_that_matches_its_record(public_key, tmp_path):
    make_rows()
    record = backup("--encrypt")
    path = backups.backup_path(record.filename)
    path.write_bytes(path.read_bytes()[:-40])
    record.size, record.sha256 = path.stat().st_size, sha256(path)
    record.save()
    destination = tmp_path / "plain.psql.bin.gz"

    with pytest.raises(offsite.OffsiteError, match="gpg could not decrypt") as failure:
        offsite.fetch_backup(record, destination, remote=False, private_key=public_key.private_key)

    assert "\n" not in str(failure.value)
    assert not destination.exists()
    assert list(tmp_path.iterdir()) == []


def test_an_altered_encrypted_file_that_matches_its_record_does_not_decrypt(
    public_key, untouched_if_nothing_is_restored
):
    make_rows()
    record = backup("--encrypt")
    path = backups.backup_path(record.filename)
    data = bytearray(path.read_bytes())
    # In the ciphertext: gpg frames streamed input in partial-length chunks, and a flipped bit
    # in a chunk's length octet can decrypt to the very same plaintext (seen once in 40
    # runs); the record's sha256 is what catches any change of the stored bytes.
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    record.sha256 = sha256(path)
    record.save()

    failure = verify(record.filename, "--private-key", str(public_key.private_key))

    assert failure.returncode == 1
    assert "gpg could not decrypt" in str(failure)
    assert_nothing_restored(record, untouched_if_nothing_is_restored)


# --------------------------------------------------------------------------- refusals


def test_encrypt_without_a_public_key_takes_no_backup(settings):
    settings.DBOPS_BACKUP_GPG_PUBLIC_KEY = None

    with pytest.raises(CommandError) as failure:
        call_command("dbbackup", "--encrypt", verbosity=0)

    assert failure.value.returncode == 1
    assert "set DBOPS_BACKUP_GPG_PUBLIC_KEY" in str(failure.value)
    assert "no backup taken" in str(failure.value)
    assert not BackupRecord.objects.exists()


def test_a_private_key_configured_as_the_public_key_is_refused_and_never_shown(
    settings, gpg_keys, capsys
):
    settings.DBOPS_BACKUP_GPG_PUBLIC_KEY = str(gpg_keys["backups"].private_key)

    with pytest.raises(CommandError) as failure:
        call_command("dbbackup", "--encrypt", verbosity=0)

    assert "holds a private key: give the public key only" in str(failure.value)
    assert not BackupRecord.objects.exists()
    shown = str(failure.value) + "".join(capsys.readouterr())
    for line in private_key_lines(gpg_keys["backups"]):
        assert line not in shown


def test_the_private_key_never_appears_in_output_or_records(public_key, gpg_keys):
    make_rows()
    done = run_manage(
        "dbbackup", "--encrypt", "--verify",
        DBOPS_BACKUP_GPG_PUBLIC_KEY=str(public_key.public_key),
    )  # fmt: skip
    record = BackupRecord.objects.order_by("-id").first()
    verified = run_manage(
        "verify_backup", record.filename, "--private-key", str(public_key.private_key), "-v", "2"
    )
    wrong = run_manage(
        "verify_backup", record.filename, "--private-key", str(gpg_keys["other"].private_key)
    )

    stored = json.dumps(list(BackupRecord.objects.values()), default=str)
    shown = "".join(r.stdout + r.stderr for r in (done, verified, wrong))
    assert (done.returncode, verified.returncode, wrong.returncode) == (0, 0, 1), shown
    assert len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
    for key_pair in gpg_keys.values():
        for line in private_key_lines(key_pair):
            assert line not in shown
            assert line not in stored


def test_the_checks_name_encryption_without_a_key_file(settings, tmp_path):
    settings.DBOPS_BACKUP_ENCRYPT = True
    settings.DBOPS_BACKUP_GPG_PUBLIC_KEY = None
    without = [message.id for message in check_off_site_and_encryption()]
    settings.DBOPS_BACKUP_GPG_PUBLIC_KEY = str(tmp_path / "missing.asc")
    missing = check_off_site_and_encryption()

    assert without == ["dbops.E011"]
    assert [message.id for message in missing] == ["dbops.E011"]
    assert "missing.asc" in missing[0].msg


def test_the_admin_shows_the_off_site_copy_and_encryption(client, public_key, remote_storage):
    record = backup("--encrypt")
    client.force_login(User.objects.create_superuser("admin", "a@example.com", "x"))

    page = client.get("/admin/dbops/backuprecord/").content.decode()
    detail = client.get(f"/admin/dbops/backuprecord/{record.pk}/change/").content.decode()

    assert "off-site copy" in page.lower() and "copied" in page
    assert "column-encrypted" in page
    assert public_key.fingerprint in detail


def test_a_private_key_with_a_passphrase_decrypts_with_its_passphrase_file(
    settings, gpg_keys, tmp_path
):
    from tests.gpg_keys import PASSPHRASE

    protected = gpg_keys["protected"]
    settings.DBOPS_BACKUP_GPG_PUBLIC_KEY = str(protected.public_key)
    make_rows()
    record = backup("--encrypt")
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text(PASSPHRASE + "\n")
    key = str(protected.private_key)

    without = verify(record.filename, "--private-key", key)
    call_command(
        "verify_backup", record.filename, "--private-key", key, "--passphrase-file",
        str(passphrase_file),
    )  # fmt: skip

    record.refresh_from_db()
    assert "passphrase is missing or wrong" in str(without)
    assert PASSPHRASE not in str(without)
    assert record.verification == BackupRecord.Verification.PASSED
