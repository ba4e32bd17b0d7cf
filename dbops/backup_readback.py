"""Every backup is read back from where it was written before its run is recorded a success.

A dump can come out of pg_dump damaged or be damaged on its way to the disk (a storage that
writes something else than it was given, a disk that loses bytes): nothing else notices
before the day it is restored. So the stored file is read back whole (its gzip checksum
covers every byte) and handed to `pg_restore --list`, which reads the archive's header and
table of contents as a restore does: cheap, a fraction of a restore, and run on every backup,
whether verified or not. A SQLite backup is read back whole and must begin as a SQLite
database does.

An encrypted backup (`.gpg`) cannot be read back once stored: the server holds no private
key. So its plain dump is read back the same way just before it is encrypted
(`read_back_file`, from the file object dbbackup hands over), and a dump that would not
restore is never encrypted, stored or recorded a success.
"""

from __future__ import annotations

import contextlib
import gzip
import shutil
import subprocess
import zlib
from pathlib import Path

CHUNK = 1 << 20
SQLITE_HEADER = b"SQLite format 3\x00"


class Unreadable(Exception):
    """The written backup would not restore; the text says why, in one line."""


def read_back(path: Path, engine: str) -> None:
    """Raise Unreadable unless the backup file at `path` reads back as a backup of `engine`
    ("postgresql", "sqlite3", ...: a BackupRecord's engine)."""
    if path.suffix == ".gpg":
        return  # read back before it was encrypted (read_back_file)
    with path.open("rb") as handle:
        read_back_file(handle, path.name, engine)


def read_back_file(handle, name: str, engine: str) -> None:
    """Raise Unreadable unless the binary file `handle` (at its start; gzipped when `name`
    ends in .gz) reads back as a backup of `engine`: a dump still in hand, before it is
    encrypted. `name` is the backup's, for messages."""
    if "postgresql" in engine:
        _read_back_dump(handle, name)
    elif "sqlite" in engine:
        _read_back_sqlite(handle, name)


@contextlib.contextmanager
def _opened(handle, name: str):
    if not name.endswith(".gz"):
        yield handle
        return
    with gzip.GzipFile(fileobj=handle, mode="rb") as source:  # leaves `handle` open
        yield source


def _read_back_dump(handle, name: str) -> None:
    pg_restore = shutil.which("pg_restore")
    if pg_restore is None:
        raise Unreadable(
            "cannot read the backup back: pg_restore is not on PATH (Debian: postgresql-client)"
        )
    process = subprocess.Popen(
        [pg_restore, "--list"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    feed_error = None
    try:
        with _opened(handle, name) as source:
            # pg_restore stops reading once it has the table of contents; the rest is still
            # read, so that the gzip checksum at the end is checked too.
            listening = True
            while chunk := source.read(CHUNK):
                if listening:
                    try:
                        process.stdin.write(chunk)
                    except BrokenPipeError:
                        listening = False
    except (OSError, EOFError, zlib.error) as exc:
        feed_error = exc
    finally:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
    stderr = process.stderr.read().decode(errors="replace")
    process.wait()
    if feed_error is not None:
        raise Unreadable(f"{name} does not read back: {feed_error}")
    if process.returncode != 0:
        reason = (stderr.strip().splitlines() or ["pg_restore --list failed"])[-1]
        raise Unreadable(f"{name} does not read back: {reason}")


def _read_back_sqlite(handle, name: str) -> None:
    try:
        with _opened(handle, name) as source:
            header = source.read(len(SQLITE_HEADER))
            while source.read(CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise Unreadable(f"{name} does not read back: {exc}") from None
    if header != SQLITE_HEADER:
        raise Unreadable(f"{name} does not read back: it is no SQLite database")
