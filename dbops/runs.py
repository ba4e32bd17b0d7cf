"""Records of runs (imports, backups) that never stay `running` once their process is gone.

A run is recorded when it starts, so that a run that never finishes is seen at all; but a
process killed with SIGKILL, or a machine that lost power, never updates its record. So each
run holds a session advisory lock keyed by its record (dbops.locks) for its lifetime: the
server releases it whatever ends the session, and the next command or page view that finds a
`running` record without its lock marks it abandoned. A run's outcome is written through
outages of a few seconds (a server restart), so that a failure is not lost with the server.
"""

from __future__ import annotations

import os
import socket
import time

from django.db import DatabaseError, connections, transaction
from django.utils import timezone

from dbops import locks

# How long a finished run keeps trying to record its outcome while the server comes back.
RECORD_RETRY_SECONDS = 15.0
RECORD_RETRY_INTERVAL = 0.5

ABANDONED_REASON = (
    "abandoned: its process (pid {pid} on {host}) ended without recording an outcome "
    "(killed, or its machine stopped; or this database was restored from a backup taken "
    "while the run went on)"
)


def start_run(model, using: str, **fields):
    """Create a `running` record and take its lock in one transaction, so no other session
    can see the record before the lock that says it is alive."""
    connection = connections[using]
    with transaction.atomic(using=using):
        record = model.objects.using(using).create(
            started_at=timezone.now(), host=socket.gethostname(), pid=os.getpid(), **fields
        )
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                locks.hold(cursor, model.RUN_LOCK, locks.key_of_number(record.pk))
                # The server releases the lock when it notices the session is gone: within
                # about 25 s of a client machine's crash, not the system default of 2 hours
                # (keepalives while the session is idle, tcp_user_timeout while the server
                # has data on the way to it, as during a COPY TO).
                cursor.execute(
                    "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; "
                    "SET tcp_keepalives_count = 3; SET tcp_user_timeout = 25000"
                )
    record.lock_session = connection.connection
    return record


def save_outcome(record) -> bool:
    """Save a finished record, retrying while the database is unreachable; False if it could
    not be saved in time (its lock is gone with the session, so it will show as abandoned)."""
    using = record._state.db
    connection = connections[using]
    deadline = time.monotonic() + RECORD_RETRY_SECONDS
    while True:
        try:
            connection.close_if_unusable_or_obsolete()
            record.save()
            break
        except DatabaseError:
            connection.close()
            if time.monotonic() >= deadline:
                return False
            time.sleep(RECORD_RETRY_INTERVAL)
    release(record)
    return True


def release(record) -> None:
    """Let go of the run's lock, if the session that took it is still this one."""
    connection = connections[record._state.db]
    if connection.vendor != "postgresql":
        return
    if getattr(record, "lock_session", None) is not connection.connection:
        return  # that session is gone, and its lock with it
    try:
        with connection.cursor() as cursor:
            locks.release(cursor, record.RUN_LOCK, locks.key_of_number(record.pk))
    except DatabaseError:
        connection.close()


def mark_abandoned(model, using: str = "default") -> int:
    """Mark every `running` record whose lock no session holds as abandoned; how many.

    The update re-checks the status, so a run that finished (status saved, then lock
    released) between the two reads keeps its outcome.
    """
    connection = connections[using]
    if connection.vendor != "postgresql":
        return 0
    try:
        running = list(
            model.objects.using(using)
            .filter(status=model.Status.RUNNING)
            .values_list("pk", "pid", "host")
        )
        if not running:
            return 0
        with connection.cursor() as cursor:
            alive = locks.held_keys(cursor, model.RUN_LOCK)
        abandoned = 0
        for pk, pid, host in running:
            if locks.key_of_number(pk) in alive:
                continue
            abandoned += (
                model.objects.using(using)
                .filter(pk=pk, status=model.Status.RUNNING)
                .update(
                    status=model.Status.ABANDONED,
                    finished_at=timezone.now(),
                    error=ABANDONED_REASON.format(pid=pid, host=host or "an unknown host"),
                )
            )
        return abandoned
    except DatabaseError:
        connection.close()
        return 0  # the database is away: whoever reads the records will see that too
