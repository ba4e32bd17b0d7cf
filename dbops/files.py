"""Files that must be on disk, and known by their digest: what backups and import snapshots
both need."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

# What fsync() of a directory says on file systems that cannot sync one (network, FUSE).
DIRECTORY_FSYNC_UNSUPPORTED = {errno.EBADF, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}


def sync_directory(directory: Path) -> None:
    """Make a new directory entry durable. A file system that cannot sync a directory is not
    an error, as in PostgreSQL's fsync_fname; a file's own fsync failing is."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in DIRECTORY_FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def sync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
