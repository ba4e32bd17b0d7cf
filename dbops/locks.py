"""PostgreSQL session advisory locks that say "this work is still going on".

A record that says `running` cannot tell by itself whether its process is still alive: a
process killed with SIGKILL, or a machine that lost power, never gets to update it. A session
advisory lock is released by the server the moment the session ends, whatever ended it, and
any session (on any host) can see in `pg_locks` whether it is still held. So a run holds a
lock keyed by its record for its lifetime, and a record whose lock is gone was abandoned.

Keys are PostgreSQL's two-int form: a fixed kind (one per kind of work, in a range chosen to
be unlikely to meet another application's locks) and the record's own number.
"""

from __future__ import annotations

import zlib

IMPORT_RUN = 0x64620001
BACKUP_RUN = 0x64620002
SCRATCH_DATABASE = 0x64620003
RESTORE_RUN = 0x64620004
# Held by the session that stopped a live database's new sessions for a swap (dbops.swap).
LIVE_DATABASE_SWAP = 0x64620005
CONSISTENCY_RUN = 0x64620006


def key_of_number(number: int) -> int:
    """An int4 key for a record's (bigint) primary key: the same for the first 2**31 records,
    and unlikely to meet another live run's after."""
    return number & 0x7FFFFFFF


def key_of_name(name: str) -> int:
    """A stable int4 key for something known by name (a scratch database)."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def hold(cursor, kind: int, key: int) -> None:
    """Take the lock for this session (it outlives any transaction it is taken in)."""
    cursor.execute("SELECT pg_advisory_lock(%s, %s)", [kind, key])
    cursor.fetchone()


def release(cursor, kind: int, key: int) -> None:
    cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [kind, key])
    cursor.fetchone()


def held_keys(cursor, kind: int, *, any_database: bool = False) -> set[int]:
    """The keys of `kind` that some session of this database (or, with `any_database`, of
    any database on the server) holds now."""
    this_database = (
        "" if any_database
        else "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )  # fmt: skip
    cursor.execute(
        "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted "
        f"AND objsubid = 2 AND classid = %s::bigint::oid {this_database}",
        [kind],
    )
    return {row[0] for row in cursor.fetchall()}
