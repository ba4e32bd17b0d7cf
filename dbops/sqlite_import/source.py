"""The SQLite source: opened read-only, checked, and copied once into a consistent snapshot.

Everything after this reads the snapshot, never the source: the source's bytes and mtime stay
as they were, rows still in its `-wal` file are included (the online backup API reads through
SQLite, unlike a file copy), and the snapshot's sha256 identifies exactly what was imported.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

from dbops.files import file_sha256, sync_directory, sync_file
from dbops.sqlite_import.django_internals import add_django_functions

SQLITE_HEADER = b"SQLite format 3\x00"
LOCK_TIMEOUT_SECONDS = 5


class SourceError(Exception):
    """The source cannot be imported at all; the message says why and what to do."""


@dataclass
class Snapshot:
    source_path: Path
    path: Path
    size: int
    sha256: str = ""  # once sealed (see seal)
    removed: bool = False  # a dry run's, once it ended


def check_source_file(path: Path) -> None:
    if not path.exists():
        raise SourceError(f"{path}: no such file")
    if not path.is_file():
        raise SourceError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise SourceError(f"{path}: the file is empty (0 bytes), not a SQLite database")
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise SourceError(f"{path}: cannot be read ({exc.strerror})") from None
    if header != SQLITE_HEADER:
        raise SourceError(f"{path}: not a SQLite database (its header is not 'SQLite format 3')")


def open_read_only(path: Path) -> sqlite3.Connection:
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=LOCK_TIMEOUT_SECONDS)


def take_snapshot(source: Path, directory: Path) -> Snapshot:
    """Copy the source through SQLite's online backup API into `directory`.

    The copy is not synced to disk here, and has no sha256 yet: `seal` does both, and the
    import has a child do it while preflight runs (a quarter of a second for 200 MiB, which
    everything else waited for), then waits for it before it commits.
    """
    check_source_file(source)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = directory / f"{source.stem}-snapshot-{stamp}.sqlite3"
    try:
        source_connection = open_read_only(source)
    except sqlite3.Error as exc:
        raise SourceError(f"{source}: cannot be opened read-only ({exc})") from None
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        target_connection = sqlite3.connect(target)
        try:
            target_connection.execute("PRAGMA synchronous = OFF")
            source_connection.backup(
                target_connection, progress=_give_up_after(LOCK_TIMEOUT_SECONDS), sleep=0.05
            )
        finally:
            target_connection.close()
    except SourceLocked:
        remove_snapshot_files(target)
        raise SourceError(
            f"{source}: the database is locked by another process (waited "
            f"{LOCK_TIMEOUT_SECONDS} s); stop the application writing to it and try again"
        ) from None
    except sqlite3.DatabaseError as exc:
        remove_snapshot_files(target)
        message = str(exc)
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            raise SourceError(no_room_for_snapshot(source_connection, directory)) from None
        if "locked" in message or "busy" in message:
            raise SourceError(
                f"{source}: the database is locked by another process (waited "
                f"{LOCK_TIMEOUT_SECONDS} s); stop the application writing to it and try again"
            ) from None
        raise SourceError(f"{source}: cannot be read as SQLite ({message})") from None
    finally:
        source_connection.close()
    return Snapshot(source, target, target.stat().st_size)


class SourceLocked(Exception):
    pass


def no_room_for_snapshot(source_connection: sqlite3.Connection, directory: Path) -> str:
    """What to tell someone whose snapshot directory filled up: where, and how much it takes
    (the source as SQLite reads it, rows in its -wal file included)."""
    page_count = source_connection.execute("PRAGMA page_count").fetchone()[0]
    page_size = source_connection.execute("PRAGMA page_size").fetchone()[0]
    free = shutil.disk_usage(directory).free
    return (
        f"no room for the snapshot in {directory}: it needs about "
        f"{mebibytes(page_count * page_size)} and {mebibytes(free)} are free; free some space "
        f"there (or set DBOPS_BACKUP_DIR elsewhere) and try again. Nothing was written to the "
        f"target, and the partial snapshot was removed"
    )


def mebibytes(size: int) -> str:
    return f"{size / (1 << 20):,.1f} MiB"


def remove_snapshot_files(path: Path) -> None:
    """Delete a snapshot and the journal files SQLite may have left beside it."""
    for leftover in (path, *(path.with_name(path.name + s) for s in ("-journal", "-wal", "-shm"))):
        leftover.unlink(missing_ok=True)


def _give_up_after(seconds: float):
    """A backup progress callback that stops waiting on a lock (Python would retry forever)."""
    deadline = time.monotonic() + seconds

    def progress(status, remaining, total):
        if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) and time.monotonic() > deadline:
            raise SourceLocked

    return progress


def seal(path: Path) -> str:
    """Sync a snapshot and its directory entry to disk; return its sha256."""
    digest = file_sha256(path)
    sync_file(path)
    sync_directory(path.parent)
    return digest


def open_snapshot(snapshot: Snapshot) -> sqlite3.Connection:
    """A read-only connection to the snapshot that returns text as bytes (see columns.py).

    SQLite leaves the CHECK constraints out of the schema it reads from a read-only database,
    so its integrity check does not look at them: preflight checks the models' CHECK
    constraints itself (plan.TableCheck), in the SQL Django's SQLite backend writes, which
    may call the functions it adds to its connections (REGEXP, django_date_extract, ...).
    """
    connection = open_read_only(snapshot.path)
    add_django_functions(connection)
    connection.text_factory = bytes
    return connection


# How thoroughly the snapshot is checked for damage before anything is read from it.
QUICK_CHECK = "quick"
FULL_CHECK = "full"
INTEGRITY_PRAGMAS = {QUICK_CHECK: "quick_check", FULL_CHECK: "integrity_check"}


def integrity_problems(
    connection: sqlite3.Connection, mode: str = QUICK_CHECK, limit: int = 20
) -> list[str]:
    """Damage in the file, and rows breaking NOT NULL constraints (not CHECK constraints: see
    open_snapshot).

    `quick_check` reads every page of every table and index once and checks each record; what
    it leaves out, and `integrity_check` adds, is matching every index entry against its row,
    which costs a lookup per row and index (14x slower on a 1M-row table). The copy reads
    every table itself (NOT INDEXED), PostgreSQL builds its own indexes and enforces
    uniqueness and foreign keys again, and the checksums compare table contents. So a damaged
    index cannot reach the target: at worst it hides a duplicate from preflight (PostgreSQL
    then refuses the copy, or the rebuild of the key after it, and all rolls back) or makes
    verification fail. quick_check is the default.
    """
    pragma = INTEGRITY_PRAGMAS[mode]
    try:
        rows = connection.execute(f"PRAGMA {pragma}({limit})").fetchall()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    messages = [as_text(row[0]) for row in rows]
    return [] if messages == ["ok"] else messages


def table_names(connection: sqlite3.Connection) -> set[str]:
    rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {as_text(row[0]) for row in rows}


def table_columns(connection: sqlite3.Connection, table: str) -> list[str]:
    """Every column of a table, generated ones included (table_info leaves those out)."""
    return [as_text(row[1]) for row in connection.execute(f'PRAGMA table_xinfo("{table}")')]


def rowid_column(connection: sqlite3.Connection, table: str) -> str | None:
    """The quoted name that reads a table's own rowid, or None when nothing does (a WITHOUT
    ROWID table, or one with a column called rowid that is not it).

    A table's INTEGER PRIMARY KEY column is its rowid (SQLite's query plan says so, which
    also sees the exceptions, such as INTEGER PRIMARY KEY DESC): reading by it is reading in
    key order. Otherwise `rowid` itself, unless a column takes that name.
    """
    columns = connection.execute(f'PRAGMA table_xinfo("{table}")').fetchall()
    keys = [as_text(row[1]) for row in columns if row[5]]
    if len(keys) == 1:
        key = '"' + keys[0].replace('"', '""') + '"'
        plan = connection.execute(f'EXPLAIN QUERY PLAN SELECT 1 FROM "{table}" WHERE {key} = 1')
        if any(as_text(row[-1]).endswith("USING INTEGER PRIMARY KEY (rowid=?)") for row in plan):
            return key
    if "rowid" in {as_text(row[1]).lower() for row in columns}:
        return None
    try:
        connection.execute(f'SELECT rowid FROM "{table}" LIMIT 0')
    except sqlite3.OperationalError:  # WITHOUT ROWID: "no such column: rowid"
        return None
    return "rowid"


class JoinedChunk(NamedTuple):
    text: bytes
    rows: int
    after: int | None  # the chunk's rows are those after this rowid (None: from the first)
    last: int  # up to this one
    summed: int  # the sum of `summed` over the chunk's rows
    nulls: int  # rows whose text is NULL, left out of `text`


def joined_chunks(
    connection: sqlite3.Connection,
    table: str,
    expression: str,
    rowid: str,
    rows_per_chunk: int,
    separator: str,
    summed: str = "0",
) -> Iterator[JoinedChunk]:
    """The texts of `expression` for a table's rows in the order of `rowid` (see
    rowid_column), joined by `separator` (SQL) a chunk of rows at a time, each with the
    number of rows in the chunk, their rowids and the sum of `summed` (SQL) over them.

    SQLite joins them (group_concat over the next rows after the last rowid): a Python object
    per row was a fifth of the cost of reading a million rows' texts. A NULL text is left out
    of the join but not of the count, so the text holds fewer separators than rows.
    """
    # ORDER BY 1: a column called "text" or "key" would otherwise name an alias.
    query = (
        f"SELECT count(*), max(key), group_concat(text, {separator}), sum(summed), "
        f"count(*) - count(text) FROM "
        f'(SELECT {rowid} AS key, {expression} AS text, {summed} AS summed FROM "{table}" '
        f"NOT INDEXED WHERE {{after}} ORDER BY 1 LIMIT {rows_per_chunk})"
    )
    first, following = query.format(after="1"), query.format(after=f"{rowid} > ?")
    after = None
    rows, last, text, total, nulls = connection.execute(first).fetchone()
    while rows:
        yield JoinedChunk(text or b"", rows, after, last, total or 0, nulls)
        after = last
        rows, last, text, total, nulls = connection.execute(following, (last,)).fetchone()


def rows_in_chunks(
    connection: sqlite3.Connection,
    table: str,
    expressions: list[str],
    rows_per_chunk: int,
    order_by: str | None = None,
) -> Iterator[list[tuple]]:
    """The values of `expressions` for every row, `rows_per_chunk` rows at a time (in the
    order of `order_by`, or as stored): for tables that joined_chunks cannot read."""
    # A plain scan reads the table itself, never through an index (see integrity_problems).
    read = f" ORDER BY {order_by}" if order_by else " NOT INDEXED"
    cursor = connection.execute(f'SELECT {", ".join(expressions)} FROM "{table}"{read}')
    while rows := cursor.fetchmany(rows_per_chunk):
        yield rows


def rows_of_chunk(
    connection: sqlite3.Connection,
    table: str,
    expressions: list[str],
    key: str,
    chunk: JoinedChunk,
) -> list[tuple]:
    """The rows of a joined chunk again, each value on its own (for values that hold the
    bytes that joined them), in the order of `key`, the rowid the chunk was read by."""
    return rows_in_range(connection, table, expressions, key, chunk.after, chunk.last)


def rows_in_range(
    connection: sqlite3.Connection,
    table: str,
    expressions: list[str],
    key: str,
    low,
    high,
    low_included: bool = False,
) -> list[tuple]:
    """The rows whose unique `key` is past `low` (or at it, with `low_included`; None: from
    the first) and up to `high`, in key order."""
    parameters = [] if low is None else [low]
    after = "1" if low is None else f"{key} {'>=' if low_included else '>'} ?"
    return connection.execute(
        f'SELECT {", ".join(expressions)} FROM "{table}" WHERE {after} AND {key} <= ? '
        f"ORDER BY {key}",
        (*parameters, high),
    ).fetchall()


def missing_for(connection: sqlite3.Connection, table: str, columns: list[str]) -> str | None:
    """What the source lacks of a table the import reads (the table, or some of its columns),
    or None; a virtual table (full-text search: FTS, R-tree) is not a model's table, whatever
    its name says."""
    found = connection.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    if found is None:
        return f"has no table {table}"
    definition = as_text(found[0] or "")
    if definition.upper().startswith("CREATE VIRTUAL TABLE"):
        module = definition.split("USING", 1)[-1].split("(", 1)[0].strip()
        return f"has {table} as a virtual table ({module}), which differs by backend"
    present = set(table_columns(connection, table))
    lacking = [name for name in columns if name not in present]
    if lacking:
        return f"table {table} lacks column(s) {', '.join(lacking)}"
    return None


# The tables SQLite's full-text and R-tree modules keep for a virtual table V, named V_<suffix>.
SHADOW_TABLE_SUFFIXES = (
    "_data", "_idx", "_content", "_docsize", "_config",  # FTS5
    "_segments", "_segdir", "_stat",  # FTS3 and FTS4
    "_node", "_parent", "_rowid",  # R-tree
)  # fmt: skip


def schema(connection: sqlite3.Connection) -> dict[str, list[str]]:
    """Each table with its column names, but SQLite's own and the shadow tables SQLite keeps
    for a virtual table (a virtual table itself is listed: someone made it)."""
    rows = connection.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
    tables = {as_text(name): as_text(sql or "") for name, sql in rows}
    virtual = [name for name, sql in tables.items() if sql.upper().startswith("CREATE VIRTUAL")]
    shadows = {f"{name}{suffix}" for name in virtual for suffix in SHADOW_TABLE_SUFFIXES}
    return {
        table: table_columns(connection, table)
        for table in sorted(tables)
        if not table.startswith("sqlite_") and table not in shadows
    }


class RowCounts:
    """The rows of each table of the snapshot, counted once: the snapshot does not change."""

    def __init__(self, connection: sqlite3.Connection):
        self.connection = connection
        self.counts: dict[str, int] = {}

    def of(self, table: str) -> int:
        if table not in self.counts:
            query = f'SELECT count(*) FROM "{table}"'
            self.counts[table] = self.connection.execute(query).fetchone()[0]
        return self.counts[table]


def applied_migrations(connection: sqlite3.Connection) -> set[tuple[str, str]] | None:
    """(app, name) of the source's applied migrations; None when it is not a Django database."""
    if "django_migrations" not in table_names(connection):
        return None
    rows = connection.execute("SELECT app, name FROM django_migrations").fetchall()
    return {(as_text(app), as_text(name)) for app, name in rows}


def as_text(value, errors: str = "replace") -> str:
    """Text for a message from what SQLite returned (bytes under text_factory=bytes)."""
    return value.decode("utf-8", errors) if isinstance(value, bytes) else str(value)
