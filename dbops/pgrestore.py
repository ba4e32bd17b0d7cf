"""Feeding a backup file to `pg_restore`: shared by restore-verification (dbops.backups) and
restoring into service (dbops.restore), so both read a file the same way and fail with the
same words.

The file is gunzipped on the way (django-dbbackup gzips every backup) and streamed to
pg_restore's stdin, so memory stays flat whatever the backup's size. pg_restore runs with
`--no-owner --no-privileges`: the objects belong to the role that restores (the
application's own role), and roles named in the dump need not exist on this server.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import subprocess
import zlib
from pathlib import Path

from django.db import connections

from dbops import conf
from dbops.masking import safe_error


class RestoreError(Exception):
    """The file could not be restored; the message says why, in one line, secrets masked."""


def gunzipped(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def libpq_environment(settings_dict: dict) -> dict[str, str]:
    """The environment that points libpq programs at the alias's server (password included:
    it goes to the child's environment, never to its command line)."""
    environment = {**os.environ}
    for key, variable in (
        ("HOST", "PGHOST"),
        ("PORT", "PGPORT"),
        ("USER", "PGUSER"),
        ("PASSWORD", "PGPASSWORD"),
    ):
        if settings_dict.get(key):
            environment[variable] = str(settings_dict[key])
    environment["PGCONNECT_TIMEOUT"] = str(conf.CONNECT_TIMEOUT)
    return environment


def restore_archive(path: Path, alias: str, database: str) -> None:
    """Restore the backup at `path` into the existing, empty `database` on `alias`'s server."""
    pg_restore = shutil.which("pg_restore")
    if pg_restore is None:
        raise RestoreError(
            "pg_restore is not on PATH: install the PostgreSQL client tools "
            "(Debian: postgresql-client), at least the server's major version"
        )
    process = subprocess.Popen(
        [pg_restore, "--no-owner", "--no-privileges", "--exit-on-error", "-d", database],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=libpq_environment(connections[alias].settings_dict),
    )
    feed_error = None
    try:
        with gunzipped(path) as source:
            shutil.copyfileobj(source, process.stdin, 1 << 20)
    except (OSError, EOFError, zlib.error) as exc:
        feed_error = exc
    finally:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
    stderr = process.stderr.read().decode(errors="replace")
    process.wait()
    if feed_error is not None or process.returncode != 0:
        reason = feed_error or error_line(stderr)
        raise RestoreError(f"the backup does not restore: {safe_error(reason)}")


def error_line(stderr: str) -> str:
    """The line that says why: pg_restore's own `error:` line, not the last one, which after
    a failed statement is the server's LINE/QUERY/CONTEXT or the statement itself."""
    lines = stderr.strip().splitlines()
    for line in lines:
        if line.startswith("pg_restore: error:"):
            return line.removeprefix("pg_restore: ")
    return lines[-1] if lines else "pg_restore failed"
