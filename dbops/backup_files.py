"""Backup files that are whole or absent, private from their first byte, in a private folder.

A plain `storage.save` writes straight to the final name with the process's umask (0644) and
sets 0600 only at the end, so a write that fails (a full disk) leaves a readable, partial
backup under a name that `listbackups` lists and `dbrestore` picks as the newest. Here a
backup is written under a hidden temporary name (created 0600), synced to disk, and only then
given its final name; any failure deletes the temporary file.
"""

from __future__ import annotations

import os
import secrets
import stat
import string
from pathlib import Path

from django.core.files import File

from dbops.files import sync_directory

# No digits: django-dbbackup lists (and dbrestore picks) every file whose name holds a date in
# DBBACKUP_DATE_FORMAT, whatever the format; a name of letters cannot hold one.
PARTIAL_PREFIX = ".dbops-partial-"


def write_privately(storage, name: str, content) -> str:
    """Write `content` to `name` in a FileSystemStorage; return the name really used.

    When `name` is taken (two backups in one second) the storage picks another, as
    `storage.save` does. The final name is made with a hard link, which never replaces an
    existing file (so the directory must support hard links, as local file systems and NFS do).
    """
    name = storage.get_available_name(name)
    directory = Path(storage.path(name)).parent
    ensure_private_directory(directory)
    partial, handle = _open_partial(directory)
    try:
        with handle:
            for chunk in (content if hasattr(content, "chunks") else File(content)).chunks():
                handle.write(chunk if isinstance(chunk, bytes) else chunk.encode())
            handle.flush()
            os.fsync(handle.fileno())
        return publish(storage, name, partial)
    finally:
        partial.unlink(missing_ok=True)


def publish(storage, name: str, partial: Path) -> str:
    """Give a finished file, synced to disk, on the storage's file system the name `name`
    (or another free one), mode 0600; return the name used. `partial` stays (its caller
    removes it). Also for files another program wrote, such as gpg's output."""
    name = storage.get_available_name(name)
    directory = Path(storage.path(name)).parent
    ensure_private_directory(directory)
    os.chmod(partial, 0o600)
    while True:
        try:
            os.link(partial, storage.path(name))
            break
        except FileExistsError:
            name = storage.get_available_name(name)
    sync_directory(directory)
    return name


def _open_partial(directory: Path):
    """A new hidden file, 0600 from its creation, and its handle."""
    while True:
        letters = "".join(secrets.choice(string.ascii_lowercase) for _ in range(16))
        partial = directory / f"{PARTIAL_PREFIX}{letters}"
        try:
            fd = os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            continue
        return partial, os.fdopen(fd, "wb")


def ensure_private_directory(directory: Path) -> None:
    """Create the backup directory, and any missing parent, 0700 whatever the umask (as
    FileSystemStorage's directory_permissions_mode did). An existing one is left as it is: its
    mode is the operator's choice, reported by `loose_permissions`."""
    if directory.is_dir():
        return
    ensure_private_directory(directory.parent)
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        if directory.is_dir():
            return  # another backup created it meanwhile
        raise
    os.chmod(directory, 0o700)


def loose_permissions(directory: Path) -> str | None:
    """Why the backup directory is open to others, or None when it is private (or missing).

    The files in it are 0600 either way, but group or other bits let others list the backups,
    and with write permission delete or replace them.
    """
    if not directory.is_dir():
        return None
    mode = stat.S_IMODE(directory.stat().st_mode)
    who = [name for name, bits in (("group", 0o070), ("others", 0o007)) if mode & bits]
    if not who:
        return None
    return f"{directory} is mode {mode:04o}: {' and '.join(who)} can open it"
