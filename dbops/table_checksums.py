"""A checksum of every table, the same for a database and for any faithful copy of it.

A backup records one per table in the snapshot pg_dump dumps; verification and restores
compute them again on the restored database and compare. So a checksum may depend on the
rows and nothing else: not on the physical order of rows (a restore reorders them), not on
the database's collation (a restore on another server may sort text otherwise), and not on
the session (DateStyle, TimeZone, ... change how COPY writes a value).

Each table is written by PostgreSQL's own `COPY (SELECT * ...) TO STDOUT` in a fixed order,
and the importer's digest (dbops.sqlite_import.verify.TableDigest) hashes the stream as it
arrives, counting the rows on the way: no table is held in memory, no text is built per row
in SQL, and one pass gives both the count and the checksum. The order is the primary key's,
collatable key columns compared as text under the "C" collation (bytes, the same everywhere);
a table without a primary key is ordered by its rows' text, also under "C".
"""

from __future__ import annotations

import re
import threading

from django.db import transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from dbops import pgcopy
from dbops.database import session_of_its_own
from dbops.sqlite_import.verify import DigestSink, canonical_cursor

SCHEMA = "public"

# What COPY's text output of a value depends on, besides the value: fixed for the duration of
# the checksums (and put back afterwards), so that any two sessions write the same bytes.
# extra_float_digits 3 is exact on every version (PostgreSQL 12+ then prints the shortest
# exact text); the search path decides how regclass and the like print.
CANONICAL_SETTINGS = {
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "lc_monetary": "C",
    "search_path": "pg_catalog, public",
}

# Every ordinary and partitioned table of the schema, with its number of columns and its
# primary key's columns in key order (each: quoted name, whether it is collatable).
TABLES_SQL = """
SELECT c.relname,
       (SELECT count(*) FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
       ARRAY(SELECT quote_ident(a.attname) || CASE WHEN a.attcollation <> 0 THEN 't' ELSE 'f' END
               FROM pg_index i
               CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
              WHERE i.indrelid = c.oid AND i.indisprimary
              ORDER BY k.position)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %s AND c.relkind IN ('r', 'p')
 ORDER BY c.relname COLLATE "C"
"""


def table_checksums(connection: BaseDatabaseWrapper) -> dict[str, dict]:
    """{table: {"rows": n, "sha256": hex}} for every table of the public schema, read in the
    caller's transaction (its snapshot, when it holds one) or in one of its own."""
    qn = connection.ops.quote_name
    with connection.cursor() as cursor:
        settings = ", ".join(["current_setting(%s)"] * len(CANONICAL_SETTINGS))
        cursor.execute(f"SELECT {settings}", list(CANONICAL_SETTINGS))
        previous = dict(zip(CANONICAL_SETTINGS, cursor.fetchone(), strict=True))
    checksums = {}
    with canonical_cursor(connection) as cursor:
        _set(cursor, CANONICAL_SETTINGS)
        cursor.execute(TABLES_SQL, [SCHEMA])
        for table, width, key in cursor.fetchall():
            source = f"{qn(SCHEMA)}.{qn(table)} AS r"
            sink = DigestSink(width)
            query = f"COPY (SELECT r.* FROM {source} ORDER BY {_order(key)}) TO STDOUT"
            pgcopy.copy_to(connection, cursor, query, sink)
            checksum = sink.digest.checksum(table)
            checksums[table] = {"rows": checksum.rows, "sha256": checksum.digest}
        # Back to the caller's settings for the rest of its transaction (at its end they go
        # back anyway). Not after a failure: the transaction is then aborted and ends.
        _set(cursor, previous)
    return checksums


def _order(key: list[str]) -> str:
    if not key:
        return 'r::text COLLATE "C"'
    return ", ".join(
        f'r.{column[:-1]}::text COLLATE "C"' if column[-1] == "t" else f"r.{column[:-1]}"
        for column in key
    )


def _set(cursor, values: dict[str, str]) -> None:
    expressions = ", ".join(["set_config(%s, %s, true)"] * len(values))
    cursor.execute(f"SELECT {expressions}", [item for pair in values.items() for item in pair])


class SnapshotChecksums:
    """table_checksums of an exported snapshot (pg_export_snapshot), computed by a thread in a
    session of its own while the exporting session is busy: pg_dump dumps the same snapshot
    meanwhile, so a backup takes about as long as the slower of the two, not their sum.

    The exporting transaction must stay open until `result()` returns (the thread imports
    the snapshot when it starts, which needs the exporter alive).
    """

    def __init__(self, alias: str, snapshot: str):
        if not re.fullmatch(r"[0-9A-Fa-f-]+", snapshot):
            raise ValueError(f"not a snapshot id: {snapshot!r}")
        self.alias, self.snapshot = alias, snapshot
        self._checksums: dict[str, dict] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="dbops-checksums", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with (
                session_of_its_own(self.alias) as session,
                transaction.atomic(using=session.alias),
                session.cursor() as cursor,
            ):
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                # A literal: no driver binds parameters in a utility statement.
                cursor.execute(f"SET TRANSACTION SNAPSHOT '{self.snapshot}'")
                self._checksums = table_checksums(session)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by result()
            self._error = exc

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> dict[str, dict]:
        """The checksums, once computed; the thread's exception if it failed."""
        self.wait()
        if self._error is not None:
            raise self._error
        return self._checksums
