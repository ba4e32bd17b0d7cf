"""COPY to and from PostgreSQL through whichever driver Django uses: the one place that knows
how the driver streams.

psycopg2 2.9 has one quirk worth its own module: when the server ends the session during a
COPY (a restart, pg_terminate_backend), it writes a chained `SystemError: <function decode>
returned a result with an exception set` to sys.stderr beside raising OperationalError. The
raised error is what dbops reports, in one line; the stray text is kept out of the output.
"""

from __future__ import annotations

import contextlib
import io


def copy_from(connection, cursor, sql: str, stream, size: int = 1 << 16) -> None:
    """Run `COPY ... FROM STDIN`, reading the data from `stream.read(size)`."""
    with _driver_noise_kept_out(), connection.wrap_database_errors:
        cursor.cursor.copy_expert(sql, stream, size=size)


def copy_to(connection, cursor, sql: str, sink) -> None:
    """Run `COPY ... TO STDOUT`, handing the data to `sink.write(data)`."""
    with _driver_noise_kept_out(), connection.wrap_database_errors:
        cursor.cursor.copy_expert(sql, sink)


@contextlib.contextmanager
def _driver_noise_kept_out():
    with contextlib.redirect_stderr(io.StringIO()):
        yield
