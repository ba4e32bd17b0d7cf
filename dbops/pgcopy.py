"""COPY to and from PostgreSQL: the one place that knows how each driver streams. psycopg2
has `cursor.copy_expert(sql, file)`; psycopg 3 has `with cursor.copy(sql) as copy`, written
to or iterated. Django uses psycopg 3 when it is installed, psycopg2 otherwise, and dbops
follows whichever it got (told apart by what the cursor offers, not by a version check).

psycopg2 2.9 has a quirk worth its own module: when the server ends the session during a COPY
(a restart, pg_terminate_backend), it writes the server's error, chained to a `SystemError:
<function decode> returned a result with an exception set`, to sys.stderr, and raises only
"invalid socket". The server's words are the ones to report: they are raised in place of
"invalid socket", and the stray text is kept out of the output (anything else written to
stderr meanwhile is passed on). psycopg 3 raises the server's error itself.

An exception raised while reading the data (a signal, a SQLite error) ends the COPY: psycopg
3 sends the server a COPY failure and re-raises the original exception; psycopg2 raises a
DatabaseError in its place, so the caller keeps the original to report (see load.CopyStream).
"""

from __future__ import annotations

import contextlib
import io
import re
import sys

from django.db import DatabaseError, OperationalError

_DRIVER_NOISE = re.compile(
    r"^psycopg2\.errors\.\w+: (?P<message>[^\n]*)\n.*?^SystemError: <function decode at \w+> "
    r"returned a result with an exception set\n?",
    re.MULTILINE | re.DOTALL,
)


def copy_from(connection, cursor, sql: str, stream, size: int = 1 << 16) -> None:
    """Run `COPY ... FROM STDIN`, reading the data from `stream.read(size)`."""
    driver_cursor = cursor.cursor
    with _server_error_reported(connection):
        if not hasattr(driver_cursor, "copy"):
            driver_cursor.copy_expert(sql, stream, size=size)
            return
        with driver_cursor.copy(sql) as copy:
            while data := stream.read(size):
                copy.write(data)


def copy_to(connection, cursor, sql: str, sink) -> None:
    """Run `COPY ... TO STDOUT`, handing the data to `sink.write(data)`."""
    driver_cursor = cursor.cursor
    with _server_error_reported(connection):
        if not hasattr(driver_cursor, "copy"):
            driver_cursor.copy_expert(sql, sink)
            return
        with driver_cursor.copy(sql) as copy:
            for data in copy:
                sink.write(data)


@contextlib.contextmanager
def _server_error_reported(connection):
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), connection.wrap_database_errors:
            yield
    except DatabaseError:
        noise = _DRIVER_NOISE.search(captured.getvalue())
        if noise is None:
            raise
        raise OperationalError(noise.group("message")) from None
    finally:
        passed_on = _DRIVER_NOISE.sub("", captured.getvalue())
        if passed_on:
            sys.stderr.write(passed_on)
