"""The facts about a database connection that more than one command or page shows.

Is it there, what is it, how fast did it answer (the system checks, the WSGI start-up guard,
runserver's banner, validate_environment); which migrations it lacks; where its sequences
stand; how rows pointing at missing rows are described. Computed once here, so that every
command and page agrees, and none of them leaks connection details: a failure is described
by its exception class or through `safe_error`, never by psycopg2's raw text (which names the
host and port).
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import subprocess
import time
import uuid
from dataclasses import dataclass

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.executor import MigrationExecutor

from dbops.envinfo import describe_database, describe_location, shorten
from dbops.masking import safe_error


@dataclass(frozen=True)
class DatabaseProbe:
    alias: str
    vendor: str
    description: str
    reachable: bool
    error_class: str | None = None
    server_version: str | None = None
    elapsed_ms: float = 0.0

    location: str = ""
    error: str = ""  # the driver's words, secrets masked (safe_error)

    @property
    def headline(self) -> str:
        version = f" {self.server_version}" if self.server_version else ""
        return f"{self.vendor}{version} {self.location}"


def server_version(connection: BaseDatabaseWrapper) -> str:
    """The server's version as people write it (15.20), from an open connection."""
    if connection.vendor == "postgresql":
        number = connection.pg_version
        return f"{number // 10000}.{number % 10000}"
    if connection.vendor == "sqlite":
        return sqlite3.sqlite_version
    return ".".join(str(part) for part in getattr(connection, "mysql_version", ())) or "unknown"


def client_major_version(path: str) -> int | None:
    """The major version of a PostgreSQL client program (pg_dump, pg_restore), from its
    `--version` ("pg_dump (PostgreSQL) 15.19 (Debian ...)"): each must be at least the
    server's, or it refuses the server (pg_dump) or the archive a newer one wrote (pg_restore).
    """
    try:
        output = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"\)\s+(\d+)", output)
    return int(match.group(1)) if match else None


def probe_connection(connection: BaseDatabaseWrapper) -> DatabaseProbe:
    """Run `SELECT 1` on the connection (opening it if needed) and describe the result."""
    description = describe_database(connection.settings_dict)
    location = describe_location(connection.settings_dict)
    started = time.monotonic()
    version = error_class = None
    error = ""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        version = server_version(connection)
    except Exception as exc:  # noqa: BLE001 - every failure means "unreachable"; the class says why
        error_class = type(exc).__name__
        password = connection.settings_dict.get("PASSWORD") or ""
        error = safe_error(exc, limit=200, password=password)
    return DatabaseProbe(
        alias=connection.alias,
        vendor=connection.vendor,
        description=description,
        location=location,
        reachable=error_class is None,
        error_class=error_class,
        server_version=version,
        elapsed_ms=(time.monotonic() - started) * 1000,
        error=error,
    )


# --------------------------------------------------------------------------- migrations


@dataclass(frozen=True)
class MigrationState:
    """What `migrate` would do to this database, as Django's own executor plans it."""

    applied: int  # migrations recorded in django_migrations
    unapplied: tuple[tuple[str, str], ...]  # (app label, name), in the order migrate runs them

    @property
    def names(self) -> list[str]:
        return [f"{app_label}.{name}" for app_label, name in self.unapplied]

    @property
    def lagging_apps(self) -> set[str]:
        """Apps whose tables and columns cannot be expected yet."""
        return {app_label for app_label, _ in self.unapplied}

    def shown(self, limit: int = 5) -> str:
        """The first unapplied migrations, for one line: 'a.0002_x, b.0003_y and 4 more'."""
        more = f" and {len(self.unapplied) - limit} more" if len(self.unapplied) > limit else ""
        return ", ".join(self.names[:limit]) + more


def migration_state(connection: BaseDatabaseWrapper) -> MigrationState:
    """The migrations of this code base not applied to `connection`, from Django's migration
    executor (the plan `migrate` would run, so replaced and squashed migrations count as
    Django counts them). Raises DatabaseError when django_migrations cannot be read."""
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return MigrationState(
        applied=len(executor.loader.applied_migrations),
        unapplied=tuple((migration.app_label, migration.name) for migration, _ in plan),
    )


# --------------------------------------------------------------------------- foreign keys

EXAMPLES = 5  # dangling rows named in a description; the count covers all of them

# Foreign keys PostgreSQL has not checked against the rows already there: their columns, the
# referenced columns, and the referencing table's primary key (to name example rows).
NOT_VALID_FOREIGN_KEYS = """
SELECT c.conname, child.relname, c.conrelid::regclass::text,
       parent.relname, c.confrelid::regclass::text,
       ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, n)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
             ORDER BY k.n),
       ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, n)
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum
             ORDER BY k.n),
       ARRAY(SELECT a.attname::text FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indrelid = c.conrelid AND i.indisprimary)
FROM pg_constraint c
JOIN pg_class child ON child.oid = c.conrelid
JOIN pg_class parent ON parent.oid = c.confrelid
WHERE c.contype = 'f' AND NOT c.convalidated AND pg_table_is_visible(c.conrelid)
ORDER BY child.relname, c.conname
"""


@dataclass(frozen=True)
class DanglingRows:
    """The rows of `table` whose foreign key `columns` point at rows `parent` lacks."""

    table: str
    columns: list[str]
    parent: str
    count: int
    examples: list[tuple[object, dict]]  # (primary key, {column: value}), the first few
    constraint: str = ""  # PostgreSQL: the NOT VALID constraint over them
    table_sql: str = ""  # PostgreSQL: the table as SQL names it (schema-qualified if needed)

    @property
    def detail(self) -> str:
        return dangling_detail(self.table, self.columns, self.parent, self.count, self.examples)


def dangling_detail(table, columns, parent, count, examples) -> str:
    """Rows whose foreign key points at missing rows, in one line that names a few of them:
    'T.col: N row(s) point at missing rows of P: pk 2: col=999; ... (and M more)'.

    `examples` are (primary key, {column: value}) pairs; values are shortened and bytes shown
    safely, since a dangling value is whatever some tool wrote."""
    shown = "; ".join(
        f"pk {pk}: " + ", ".join(f"{column}={shorten(value)}" for column, value in values.items())
        for pk, values in examples
    )
    more = f" (and {count - len(examples)} more)" if count > len(examples) else ""
    return (
        f"{table}.{'+'.join(columns)}: {count} row(s) point at missing rows of {parent}: "
        f"{shown}{more}"
    )


def not_valid_foreign_keys(connection: BaseDatabaseWrapper) -> list[DanglingRows]:
    """Every foreign key PostgreSQL never checked the old rows of (created NOT VALID, as
    bulk loaders do), with the rows that point at missing rows: one anti-join each, so the
    cost is that of a VALIDATE CONSTRAINT. A constraint whose rows all match has count 0."""
    qn = connection.ops.quote_name
    found = []
    with connection.cursor() as cursor:
        cursor.execute(NOT_VALID_FOREIGN_KEYS)
        for name, child, child_sql, parent, parent_sql, columns, refs, pk in cursor.fetchall():
            key = f"child.{qn(pk[0])}" if len(pk) == 1 else "child.ctid::text"
            values = ", ".join(f"child.{qn(c)}" for c in columns)
            not_null = " AND ".join(f"child.{qn(c)} IS NOT NULL" for c in columns)
            match = " AND ".join(
                f"parent.{qn(r)} = child.{qn(c)}" for c, r in zip(columns, refs, strict=True)
            )
            # count(*) OVER () counts every dangling row before LIMIT keeps a few examples.
            cursor.execute(
                f"SELECT count(*) OVER (), {key}, {values} FROM {child_sql} AS child "
                f"WHERE {not_null} AND NOT EXISTS "
                f"(SELECT 1 FROM {parent_sql} AS parent WHERE {match}) "
                f"ORDER BY 2 LIMIT {EXAMPLES}"
            )
            rows = cursor.fetchall()
            examples = [(row[1], dict(zip(columns, row[2:], strict=True))) for row in rows]
            count = rows[0][0] if rows else 0
            found.append(DanglingRows(child, columns, parent, count, examples, name, child_sql))
    return found


def sqlite_dangling_rows(
    cursor, placeholder: str = "%s", tables: list[str] | None = None
) -> list[DanglingRows]:
    """Rows of a SQLite database that point at missing rows, one entry per foreign key (of
    `tables`, or of every table): SQLite lets any tool write them, PRAGMA foreign_key_check
    finds them. `cursor` is Django's (placeholder %s) or the sqlite3 module's (?), which may
    return text as bytes."""
    checks = [f"PRAGMA foreign_key_check({_quoted(table)})" for table in tables or []]
    dangling: dict[tuple[str, int], tuple[str, list]] = {}
    for check in checks or ["PRAGMA foreign_key_check"]:
        cursor.execute(check)
        for table, rowid, parent, fk_id in cursor.fetchall():
            dangling.setdefault((_text(table), fk_id), (_text(parent), []))[1].append(rowid)
    found = []
    for (table, fk_id), (parent, rowids) in dangling.items():
        cursor.execute(f"PRAGMA foreign_key_list({_quoted(table)})")
        columns = [_text(row[3]) for row in cursor.fetchall() if row[0] == fk_id]
        cursor.execute(f"PRAGMA table_info({_quoted(table)})")
        pk = next((_text(row[1]) for row in cursor.fetchall() if row[5] == 1), "rowid")
        examples = []
        for rowid in [r for r in rowids if r is not None][:EXAMPLES]:
            selected = ", ".join(_quoted(name) for name in [pk, *columns])
            cursor.execute(
                f"SELECT {selected} FROM {_quoted(table)} WHERE rowid = {placeholder}", [rowid]
            )
            row = cursor.fetchone()
            examples.append((_text(row[0]), dict(zip(columns, row[1:], strict=True))))
        found.append(DanglingRows(table, columns, parent, len(rowids), examples))
    return found


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _text(value) -> object:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def foreign_keys_into(connection, tables: list[str]) -> list[tuple[str, str, str]]:
    """(table, referenced table, constraint) of every foreign key from a table not in
    `tables` to one in them (PostgreSQL)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT child.relname, parent.relname, c.conname FROM pg_constraint c "
            "JOIN pg_class child ON child.oid = c.conrelid "
            "JOIN pg_class parent ON parent.oid = c.confrelid "
            "WHERE c.contype = 'f' AND pg_table_is_visible(c.conrelid) "
            "AND parent.relname = ANY(%s) AND NOT child.relname = ANY(%s) ORDER BY 1, 2",
            [tables, tables],
        )
        return cursor.fetchall()


# --------------------------------------------------------------------------- sequences


@dataclass(frozen=True)
class SequenceState:
    """A key's sequence and what it would hand out next, beside the largest key taken."""

    table: str
    column: str
    sequence: str | None  # None: the key has no sequence or identity
    next_value: int | None = None
    largest: int | None = None  # None: the table is empty

    @property
    def behind(self) -> bool:
        """The next insert would get a key already taken."""
        return self.largest is not None and self.next_value <= self.largest


def sequence_state(connection: BaseDatabaseWrapper, table: str, column: str) -> SequenceState:
    """The state of the sequence behind `table.column` (PostgreSQL), read in one statement."""
    qn = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence(%s, %s)", [qn(table), column])
        sequence = cursor.fetchone()[0]
        if sequence is None:
            return SequenceState(table, column, None)
        cursor.execute(
            f"SELECT last_value, is_called, (SELECT MAX({qn(column)}) FROM {qn(table)}) "
            f"FROM {sequence}"
        )
        last_value, is_called, largest = cursor.fetchone()
    next_value = last_value + 1 if is_called else last_value
    return SequenceState(table, column, sequence, next_value, largest)


def restart_sequence_past_largest_key(
    connection: BaseDatabaseWrapper, state: SequenceState, *, never_backwards: bool
) -> int:
    """Make the next insert get the key after the largest (1 for an empty table); return it.

    With ALTER SEQUENCE ... RESTART, not setval(): setval is not transactional, so a failed
    import would roll its rows back and still leave every sequence at the source's values
    (the application's next insert then fails with a duplicate key). RESTART rolls back with
    the transaction it runs in, and takes effect at commit. `never_backwards` keeps a sequence
    that is already ahead where it is (a repair must not hand out keys used before).
    """
    next_value = (state.largest or 0) + 1
    if never_backwards and state.next_value is not None:
        next_value = max(next_value, state.next_value)
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER SEQUENCE {state.sequence} RESTART WITH {int(next_value)}")
    return next_value


@contextlib.contextmanager
def session_of_its_own(alias: str, database: str | None = None):
    """A Django connection of its own, to `database` (default: the alias's own), with the
    alias's settings, closed on the way out.

    It lives under a temporary alias of `connections` (not of its settings: it is no
    configured database, and Django's test isolation lets such connections be), so that
    everything that goes through Django by alias (transaction.atomic, the COPY helpers)
    reaches this session and not the alias's own one: a scratch database, or a second
    session beside an open transaction. Django's wrapper, so either psycopg works and errors
    are Django's; a connection pool in OPTIONS is left out (this is one session), and it
    waits DBOPS_CONNECT_TIMEOUT for the server unless OPTIONS say otherwise.
    """
    from django.db import connections
    from django.db.utils import load_backend

    from dbops import conf

    settings_dict = {**connections[alias].settings_dict}
    if database is not None:
        settings_dict["NAME"] = database
    options = {**settings_dict.get("OPTIONS", {})}
    options.pop("pool", None)
    if settings_dict["ENGINE"].endswith("postgresql"):
        options.setdefault("connect_timeout", conf.CONNECT_TIMEOUT)
    settings_dict["OPTIONS"] = options
    name = f"{alias}__dbops_session_{uuid.uuid4().hex[:8]}"
    connection = load_backend(settings_dict["ENGINE"]).DatabaseWrapper(settings_dict, name)
    connections[name] = connection
    try:
        yield connection
    finally:
        try:
            connection.close()
        finally:
            del connections[name]
