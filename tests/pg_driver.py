"""The PostgreSQL driver Django uses here (psycopg 3 when it is installed, psycopg2 otherwise),
for the tests' side sessions: a lock holder, a writer racing an import, a throwaway cluster's
readiness probe. The second pass of `make test` runs without psycopg2 at all.

psycopg 3 cursors bind parameters on the server by default; Django's backend binds them on
the client, and so do these sessions, so that SQL reads the same under both drivers.
"""

from django.db.backends.postgresql.psycopg_any import is_psycopg3

if is_psycopg3:
    import psycopg as driver
else:
    import psycopg2 as driver

NAME = driver.__name__
Error = driver.Error
OperationalError = driver.OperationalError


def connect(url: str, **options):
    """A driver connection (not Django's) to a postgres:// URL, in a transaction until
    `autocommit = True` is set, as both drivers start."""
    if is_psycopg3:
        return driver.connect(url, cursor_factory=driver.ClientCursor, **options)
    return driver.connect(url, **options)
