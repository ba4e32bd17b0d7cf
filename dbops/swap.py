"""Putting one database into service in place of another on the same server, with a way back.

PostgreSQL renames a database in a transaction, so "live aside, restored into its place" is
one commit: either both names changed or neither did. A rename needs the database to have no
session at all, so the live database first stops taking new sessions (ALLOW_CONNECTIONS
false), the sessions already there are listed (and ended only when the operator says so), and
Django's own connection is closed last. Every statement here runs in a maintenance session on
another database of the server (`postgres`); nothing here decides whether a swap is wise,
dbops.restore does.

The role needs the CREATEDB right and must own the live database (PostgreSQL's rule for
renaming it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from dbops import locks

MAX_NAME = 63  # PostgreSQL's identifier limit (NAMEDATALEN - 1)
TERMINATE_WAIT_SECONDS = 10.0


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def timestamped_name(live: str, kind: str, when: datetime) -> str:
    """`{live}_{kind}_{YYYYmmddHHMMSS}`, the live name cut so the whole fits in 63 characters:
    the name alone says what the database is and when it was made."""
    suffix = f"_{kind}_{when:%Y%m%d%H%M%S}"
    return live[: MAX_NAME - len(suffix)] + suffix


def unused_name(cursor, name: str) -> str:
    """`name`, or `name_2`, `name_3`, ... (cut to fit) when a database of that name exists."""
    candidate, number = name, 1
    while database_exists(cursor, candidate):
        number += 1
        tail = f"_{number}"
        candidate = name[: MAX_NAME - len(tail)] + tail
    return candidate


def database_exists(cursor, name: str) -> bool:
    cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
    return cursor.fetchone() is not None


def create_database_like(cursor, name: str, like: str) -> None:
    """An empty database with the encoding and collation of `like`, so text sorts and compares
    in the restored database as it did in the live one (template1 may differ)."""
    cursor.execute(
        "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
        "WHERE datname = %s",
        [like],
    )
    encoding, collate, ctype = cursor.fetchone()
    cursor.execute(
        f"CREATE DATABASE {quoted(name)} TEMPLATE template0 ENCODING {literal(encoding)} "
        f"LC_COLLATE {literal(collate)} LC_CTYPE {literal(ctype)}"
    )


def drop_database(cursor, name: str) -> None:
    cursor.execute(f"DROP DATABASE IF EXISTS {quoted(name)} WITH (FORCE)")


def allow_connections(cursor, name: str, allowed: bool) -> None:
    cursor.execute(
        f"ALTER DATABASE {quoted(name)} WITH ALLOW_CONNECTIONS {'true' if allowed else 'false'}"
    )


def refuse_new_sessions(cursor, live: str) -> None:
    """Stop `live` taking new sessions (a pool reconnecting would make the rename fail), under
    a lock of this session's: if the process dies before it lets them in again, the lock goes
    with its session and `reopen_if_abandoned` can tell."""
    locks.hold(cursor, locks.LIVE_DATABASE_SWAP, locks.key_of_name(live))
    allow_connections(cursor, live, False)


def reopen_if_abandoned(cursor, live: str) -> str:
    """Let `live` take sessions again when a swap that stopped them was killed; "" when
    there was nothing to do, else what was done (or why nothing could be)."""
    cursor.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", [live])
    row = cursor.fetchone()
    if row is None or row[0]:
        return ""
    held = locks.held_keys(cursor, locks.LIVE_DATABASE_SWAP, any_database=True)
    if locks.key_of_name(live) in held:
        raise SwapInProgress(
            f"database {live} takes no new sessions: a swap by another restore_backup is going on"
        )
    allow_connections(cursor, live, True)
    return (
        f"{live} took no new sessions since a swap was interrupted (its process ended "
        f"before letting them in again): it takes them again"
    )


class SwapInProgress(Exception):
    pass


@dataclass(frozen=True)
class Session:
    """A client session on a database, as an operator recognises it (never its query, which
    may hold data)."""

    pid: int
    database: str
    application_name: str
    client: str

    def __str__(self) -> str:
        application = self.application_name or "no application_name"
        return f"pid {self.pid} ({application}, from {self.client}) on {self.database}"


def sessions_on(cursor, databases: list[str], ignore_pids: set[int]) -> list[Session]:
    """The client sessions on any of `databases`, but this one and `ignore_pids`."""
    cursor.execute(
        "SELECT pid, datname, application_name, host(client_addr), client_port "
        "FROM pg_stat_activity WHERE datname = ANY(%s) AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend' ORDER BY datname, pid",
        [databases],
    )
    return [
        Session(
            pid, database, application or "", f"{address}:{port}" if address else "a local socket"
        )
        for pid, database, application, address, port in cursor.fetchall()
        if pid not in ignore_pids
    ]


def terminate(cursor, sessions: list[Session]) -> list[Session]:
    """End the sessions and wait until the server has let them go; those still there after
    TERMINATE_WAIT_SECONDS (none, normally)."""
    pids = [session.pid for session in sessions]
    cursor.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [pids])
    deadline = time.monotonic() + TERMINATE_WAIT_SECONDS
    while True:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s::int[])", [pids])
        remaining = {row[0] for row in cursor.fetchall()}
        if not remaining or time.monotonic() >= deadline:
            return [session for session in sessions if session.pid in remaining]
        time.sleep(0.1)


def swap_names(maintenance, live: str, incoming: str, aside: str) -> None:
    """Rename `live` to `aside` and `incoming` to `live` in one transaction, and let the
    database set aside take sessions again (it stopped for the swap), so a rollback or a
    look into it can connect."""
    maintenance.set_autocommit(False)
    try:
        with maintenance.cursor() as cursor:
            cursor.execute(f"ALTER DATABASE {quoted(live)} RENAME TO {quoted(aside)}")
            cursor.execute(f"ALTER DATABASE {quoted(incoming)} RENAME TO {quoted(live)}")
            allow_connections(cursor, aside, True)
        maintenance.commit()
    except BaseException:
        maintenance.rollback()
        raise
    finally:
        maintenance.set_autocommit(True)
