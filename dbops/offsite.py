"""The off-site copy of every backup, and getting a backup back from either copy.

A backup on the machine it protects is lost with that machine. So each backup is also copied
to `STORAGES["dbbackup_remote"]` (any django-storages backend; SFTP is the tested one, S3 is
documented), checked by reading it back (size and sha256 against the record), and the
outcome is recorded on its BackupRecord. A failed copy never spoils the local backup: it is
recorded (`remote_copy` failed, the reason masked in `remote_detail`), the command exits 1,
and `/health/` fails until a later backup reaches the remote.

`fetch_backup` is the one way back: from the local file or the remote copy into a plain
local file, checked against the record's sha256, decrypted with a private key the caller
brings when the backup is encrypted. verify_backup and restore_backup use it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from django.core.files import File
from django.utils import timezone

from dbops import conf, sftp
from dbops.encryption import EncryptionError, decrypt
from dbops.files import file_sha256
from dbops.masking import safe_error
from dbops.models import BackupRecord


class OffsiteError(Exception):
    """Why a copy could not be made or fetched, in one line, secrets masked."""


def where() -> str:
    """The remote, for messages (never a password)."""
    try:
        storage = conf.remote_backup_storage()
    except Exception:  # noqa: BLE001 - a backend that cannot load is named by its alias
        storage = None
    if storage is None:
        return "no remote storage"
    if sftp.is_sftp_storage(storage):
        return sftp.location(storage)
    return f'STORAGES["{conf.REMOTE_BACKUP_STORAGE_ALIAS}"] ({type(storage).__name__})'


@contextlib.contextmanager
def remote_files():
    """The remote storage's files, as an object with upload / download / delete / exists.

    SFTP goes through dbops.sftp (known hosts only, temporary name then rename); any other
    storage (S3: an object appears whole when its upload completes) through the storage API.
    """
    storage = conf.remote_backup_storage()
    if storage is None:
        alias = f'STORAGES["{conf.REMOTE_BACKUP_STORAGE_ALIAS}"]'
        if conf.has_remote_backup_storage():
            raise OffsiteError(f"{alias} cannot be loaded (its BACKEND, or a missing package)")
        raise OffsiteError(f"no off-site storage: {alias} is not set")
    if sftp.is_sftp_storage(storage):
        with sftp.session(storage) as directory:
            yield directory
    else:
        yield StorageFiles(storage)


class StorageFiles:
    """Files of a storage that is not SFTP, through Django's storage API (streamed both ways:
    S3 uploads a file object in parts and reads it back in chunks)."""

    def __init__(self, storage):
        self.storage = storage

    def upload(self, source: Path, name: str, *, size: int, sha256: str) -> None:
        if self.storage.exists(name):
            raise OffsiteError(f"{name} already exists on the remote: not replaced")
        with source.open("rb") as handle:
            stored = self.storage.save(name, File(handle, name=name))
        if stored != name:
            self.storage.delete(stored)
            raise OffsiteError(f"the remote stored {name} as {stored}: removed it")
        copied = self._digest(name)
        if copied != (size, sha256):
            self.storage.delete(name)
            raise OffsiteError(
                f"the copy read back from the remote differs ({copied[0]:,} bytes, sha256 "
                f"{copied[1][:12]}…; sent {size:,} bytes, {sha256[:12]}…): removed it"
            )

    def download(self, name: str, destination: Path) -> tuple[int, str]:
        with destination.open("xb") as handle:
            return self._digest(name, handle)

    def _digest(self, name: str, handle=None) -> tuple[int, str]:
        sink = sftp._Digest(handle)
        with self.storage.open(name, "rb") as remote:
            for chunk in remote.chunks(sftp.CHUNK):
                sink.write(chunk)
        return sink.size, sink.hexdigest()

    def delete(self, name: str) -> None:
        self.storage.delete(name)

    def exists(self, name: str) -> bool:
        return self.storage.exists(name)


# --------------------------------------------------------------------------- copy


def copy_to_remote(record: BackupRecord, source: Path) -> str | None:
    """Copy a recorded backup's file to the remote and record the outcome; None when it was
    copied (or no remote is configured), else the reason (masked, one line).

    The remote copy keeps the backup's file name; a name already taken there is never
    replaced. The record names the remote file only once dbops wrote it and read it back:
    retention deletes what `remote_name` names, and a failed copy (say, the name was taken)
    must not point it at a file dbops never wrote.
    """
    if not conf.has_remote_backup_storage():
        return None
    record.remote_name = ""
    try:
        with remote_files() as remote:
            remote.upload(source, record.filename, size=record.size, sha256=record.sha256)
    except Exception as exc:  # noqa: BLE001 - any failure of the remote is recorded as such
        reason = f"off-site copy to {where()} failed: {safe_error(exc)}"
        record.remote_copy = BackupRecord.RemoteCopy.FAILED
        record.remote_detail = reason
        record.remote_copied_at = None
    else:
        reason = None
        record.remote_name = record.filename
        record.remote_copy = BackupRecord.RemoteCopy.COPIED
        record.remote_detail = (
            f"copied to {where()} and read back: {record.size:,} bytes, sha256 matches"
        )
        record.remote_copied_at = timezone.now()
    record.save(update_fields=["remote_copy", "remote_name", "remote_copied_at", "remote_detail"])
    return reason


# --------------------------------------------------------------------------- fetch


def fetch_backup(
    record: BackupRecord,
    destination: Path,
    *,
    remote: bool,
    private_key: Path | None = None,
    passphrase: str | None = None,
) -> Path:
    """The backup of `record` as a plain (decrypted) file at `destination`, from the local
    file or (`remote=True`) the off-site copy; raises OffsiteError with the reason.

    The copy read is checked against the record's size and sha256 before anything is done
    with it; an encrypted backup needs `private_key` (an armored secret key file, and its
    `passphrase` if it has one), used in a throwaway keyring. `destination` appears whole or
    not at all, and nothing fetched stays behind on failure. A remote copy that arrives whole
    but differs from the record is recorded as a failed off-site copy.
    """
    if record.status != BackupRecord.Status.SUCCEEDED or not record.filename:
        raise OffsiteError(f"backup {record.pk} did not succeed; there is nothing to fetch")
    if record.encrypted and private_key is None:
        raise OffsiteError(
            f"it is encrypted (to key {record.encryption_key}): give the private key file "
            f"(--private-key FILE); the server does not hold it"
        )
    destination = Path(destination)
    work = Path(tempfile.mkdtemp(prefix=".dbops-fetch-", dir=destination.parent))
    try:
        copy = _fetched_copy(record, work, remote=remote)
        if record.encrypted:
            plain = work / "plain"
            try:
                decrypt(
                    copy,
                    plain,
                    private_key=Path(private_key),
                    expected_fingerprint=record.encryption_key,
                    passphrase=passphrase,
                )
            except EncryptionError as exc:
                raise OffsiteError(safe_error(exc)) from None
            copy = plain
        os.replace(copy, destination)
        return destination
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _fetched_copy(record: BackupRecord, work: Path, *, remote: bool) -> Path:
    """The stored (maybe encrypted) file, checked against the record: the local file as it
    is, or the remote copy downloaded into `work`."""
    if not remote:
        path = Path(conf.BACKUP_DIR) / record.filename
        if record.deleted_at is not None or not path.is_file():
            raise OffsiteError(
                f"{path} is missing (deleted by retention, or lost); "
                f"fetch the off-site copy instead (--remote)"
            )
        size, sha256 = path.stat().st_size, file_sha256(path)
        _check_copy(record, "the local file", size, sha256)
        if record.encrypted:
            return path
        copy = work / "copy"
        shutil.copyfile(path, copy)
        return copy
    if record.remote_copy != BackupRecord.RemoteCopy.COPIED or record.remote_deleted_at:
        state = record.remote_detail or "no off-site copy was made"
        raise OffsiteError(f"it has no off-site copy to fetch ({state})")
    copy = work / "copy"
    try:
        with remote_files() as files:
            size, sha256 = files.download(record.remote_name, copy)
    except OffsiteError:
        raise
    except Exception as exc:  # noqa: BLE001 - a remote that cannot be read is one message
        reason = safe_error(exc)
        reason = f"could not fetch {record.remote_name} from {where()}: {reason}"
        raise OffsiteError(reason) from None
    try:
        _check_copy(record, "the off-site copy", size, sha256)
    except OffsiteError as exc:
        record.remote_copy = BackupRecord.RemoteCopy.FAILED
        record.remote_detail = f"{timezone.now():%Y-%m-%d %H:%M} UTC: {exc}"
        record.save(update_fields=["remote_copy", "remote_detail"])
        raise
    return copy


def _check_copy(record: BackupRecord, what: str, size: int, sha256: str) -> None:
    if (size, sha256) != (record.size, record.sha256):
        raise OffsiteError(
            f"{what} is {size:,} bytes, sha256 {sha256[:12]}…; the record says "
            f"{record.size:,} bytes, {record.sha256[:12]}…: it was changed or truncated"
        )
