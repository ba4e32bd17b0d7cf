"""dbops.backup_files: a backup file is private from its first byte and appears whole or not
at all, under a name nothing lists while it is written."""

import os

import pytest
from dbbackup.utils import filename_to_datestring
from django.core.files.storage import FileSystemStorage

from dbops.backup_files import loose_permissions, write_privately

NAME = "default-host-2026-01-01-000000.psql.bin.gz"


class WatchedContent:
    """File content that looks at the directory between its chunks, as another process
    (listbackups, a curious user) could while a backup is being written."""

    def __init__(self, directory, chunks, fail_after=None):
        self.directory, self.parts, self.fail_after = directory, chunks, fail_after
        self.seen = []

    def chunks(self):
        for number, chunk in enumerate(self.parts):
            yield chunk
            self.seen += [(p.name, p.stat().st_mode & 0o777) for p in self.directory.iterdir()]
            if number == self.fail_after:
                raise OSError(28, "No space left on device")


@pytest.fixture
def storage(tmp_path):
    return FileSystemStorage(location=tmp_path / "backups", file_permissions_mode=0o600)


def test_a_file_being_written_is_private_and_under_a_name_without_a_date(storage, tmp_path):
    content = WatchedContent(tmp_path / "backups", [b"first ", b"second"])

    name = write_privately(storage, NAME, content)

    assert name == NAME
    ((partial, mode),) = set(content.seen)
    assert mode == 0o600
    assert partial.startswith(".")
    assert filename_to_datestring(partial) is None
    assert os.listdir(tmp_path / "backups") == [NAME]
    assert (tmp_path / "backups" / NAME).read_bytes() == b"first second"


def test_a_write_that_fails_midway_leaves_nothing(storage, tmp_path):
    content = WatchedContent(tmp_path / "backups", [b"first ", b"second"], fail_after=0)

    with pytest.raises(OSError, match="No space left"):
        write_privately(storage, NAME, content)

    assert os.listdir(tmp_path / "backups") == []


def test_a_taken_name_is_never_overwritten(storage, tmp_path):
    write_privately(storage, NAME, WatchedContent(tmp_path, [b"older"]))

    name = write_privately(storage, NAME, WatchedContent(tmp_path, [b"newer"]))

    assert name != NAME
    assert (tmp_path / "backups" / NAME).read_bytes() == b"older"
    assert (tmp_path / "backups" / name).read_bytes() == b"newer"


def test_the_backup_directory_is_created_private(storage, tmp_path):
    old_umask = os.umask(0)
    try:
        write_privately(storage, NAME, WatchedContent(tmp_path, [b"backup"]))
    finally:
        os.umask(old_umask)

    assert (tmp_path / "backups").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "backups" / NAME).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("mode", "problem"),
    [
        (0o700, None),
        (0o750, "group can open it"),
        (0o701, "others can open it"),
        (0o777, "group and others can open it"),
    ],
)
def test_loose_permissions_say_who_besides_the_owner_can_open_the_directory(
    tmp_path, mode, problem
):
    directory = tmp_path / "backups"
    directory.mkdir()
    directory.chmod(mode)

    found = loose_permissions(directory)

    assert found == (None if problem is None else f"{directory} is mode {mode:04o}: {problem}")


def test_a_missing_directory_has_no_loose_permissions(tmp_path):
    assert loose_permissions(tmp_path / "missing") is None


def test_a_backup_is_private_even_where_the_storage_would_make_it_readable(tmp_path):
    plain = FileSystemStorage(location=tmp_path / "backups", file_permissions_mode=0o644)

    name = write_privately(plain, NAME, WatchedContent(tmp_path / "backups", [b"data"]))

    assert (tmp_path / "backups" / name).stat().st_mode & 0o777 == 0o600
