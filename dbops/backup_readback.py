"""Every backup is read back from where it was written before its run is recorded a success.

A dump can come out of pg_dump damaged or be damaged on its way to the disk (a storage that
writes something else than it was given, a disk that loses bytes): nothing else notices
before the day it is restored. So the stored file is read back whole (its gzip checksum
covers every byte) and handed to `pg_restore --list`, which reads the archive's header and
table of contents as a restore does: cheap, a fraction of a restore, and run on every backup,
whether verified or not. A SQLite backup is read back whole and must begin as a SQLite
database does.

An encrypted backup (`.gpg`) is not read back here: the server holds no private key.
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
        return
    if "postgresql" in engine:
        _read_back_dump(path)
    elif "sqlite" in engine:
        _read_back_sqlite(path)


def _opened(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def _read_back_dump(path: Path) -> None:
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
        with _opened(path) as source:
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
        raise Unreadable(f"{path.name} does not read back: {feed_error}")
    if process.returncode != 0:
        reason = (stderr.strip().splitlines() or ["pg_restore --list failed"])[-1]
        raise Unreadable(f"{path.name} does not read back: {reason}")


def _read_back_sqlite(path: Path) -> None:
    try:
        with _opened(path) as source:
            header = source.read(len(SQLITE_HEADER))
            while source.read(CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise Unreadable(f"{path.name} does not read back: {exc}") from None
    if header != SQLITE_HEADER:
        raise Unreadable(f"{path.name} does not read back: it is no SQLite database")
