"""dbops.sqlite_import.value_checks, run in SQLite: a big table's rows checked in two halves
that cover every row once, and text scanned for invalid UTF-8 and NUL characters a chunk of
rows at a time.
"""

import sqlite3

import pytest

from dbops.sqlite_import import plan, value_checks
from tests.sqlite_import.conftest import table_with


def test_a_big_table_is_checked_in_two_halves_of_its_rows_that_cover_every_row():
    rows = value_checks.SPLIT_CHECKS_MIN_ROWS * 2
    connection = table_with(rows, "(id INTEGER PRIMARY KEY, v)")

    first, second = value_checks.row_halves(connection, "t", rows)

    counts = [connection.execute(f"SELECT count(*) FROM t WHERE {half}").fetchone()[0]
              for half in (first, second)]  # fmt: skip
    assert counts == [rows // 2, rows // 2]


def test_halves_cover_every_row_of_negative_and_sparse_rowids_once():
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE t (v)")
    rowids = [-(2**62), -5, 0, 7, *range(10**9, 10**9 + value_checks.SPLIT_CHECKS_MIN_ROWS), 2**62]
    connection.executemany("INSERT INTO t (rowid, v) VALUES (?, 0)", ((r,) for r in rowids))

    halves = value_checks.row_halves(connection, "t", len(rowids))

    found = [
        row[0] for half in halves for row in connection.execute(f"SELECT rowid FROM t WHERE {half}")
    ]
    assert sorted(found) == sorted(rowids)
    assert all(halves)


@pytest.mark.parametrize(
    "rows, definition",
    [
        (10, "(id INTEGER PRIMARY KEY, v)"),
        (value_checks.SPLIT_CHECKS_MIN_ROWS, "(id INTEGER PRIMARY KEY, v) WITHOUT ROWID"),
        # INT, unlike INTEGER, does not make the key the rowid; the column hides rowid.
        (value_checks.SPLIT_CHECKS_MIN_ROWS, "(id INT PRIMARY KEY, RowID)"),
        (value_checks.SPLIT_CHECKS_MIN_ROWS, "(id INT PRIMARY KEY, v, rowid AS (NULL))"),
    ],
    ids=["small", "without rowid", "a column called rowid", "a generated column called rowid"],
)
def test_a_table_that_cannot_be_halved_by_rowid_is_checked_whole(rows, definition):
    connection = table_with(rows, definition)
    if "RowID)" in definition:
        connection.execute("UPDATE t SET RowID = NULL")

    assert value_checks.row_halves(connection, "t", rows) == ("1", None)


def text_table(*rows, definition="(id INTEGER PRIMARY KEY, a TEXT, b TEXT)"):
    """A table of two nullable text columns (values as bytes: CAST(? AS TEXT) keeps them), and
    what scan_text needs to read it."""
    from types import SimpleNamespace

    from django.db import models

    connection = sqlite3.connect(":memory:")
    connection.text_factory = bytes
    connection.execute(f"CREATE TABLE t {definition}")
    connection.executemany(
        "INSERT INTO t VALUES (?, CAST(? AS TEXT), CAST(? AS TEXT))",
        [(number, *row) for number, row in enumerate(rows, start=1)],
    )
    fields = [models.TextField(null=True), models.TextField(null=True)]
    for field, name in zip(fields, ["a", "b"], strict=True):
        field.set_attributes_from_name(name)
    return connection, SimpleNamespace(source_table="t"), [plan.column_for(f) for f in fields]


@pytest.mark.parametrize(
    "rows, valid",
    [
        ([(b"plain", b"caf\xc3\xa9 \xe2\x98\x95"), (None, b"")], True),
        ([(b"A\xffB", b"ok")], False),
        ([(None, b"\xc3(")], False),  # a NULL beside it hides nothing
        ([(b"ends in \xc3", b"\xa9 starts the next value")], False),  # é only if joined as is
        ([(b"ok", b"ends in \xc3"), (b"\xa9 starts the next row", b"ok")], False),
    ],
    ids=["valid", "invalid byte", "beside a NULL", "split across columns", "split across rows"],
)
def test_text_is_checked_for_utf8_a_chunk_of_rows_at_a_time(rows, valid):
    connection, plan, text_columns = text_table(*rows)

    assert value_checks.scan_text(connection, plan, text_columns).valid_utf8 is valid


@pytest.mark.parametrize(
    "rows, holds_nul",
    [
        ([(b"plain", b"text"), (None, b"")], False),
        ([(b"plain", b"text"), (None, b"12:00\x00junk")], True),
        ([(b"\x00", None)], True),
    ],
)
def test_a_nul_in_any_value_is_found_a_chunk_of_rows_at_a_time(rows, holds_nul):
    connection, plan, text_columns = text_table(*rows)

    assert value_checks.scan_text(connection, plan, text_columns).holds_nul is holds_nul


def test_a_table_without_a_rowid_of_its_own_is_checked_row_by_row():
    definition = "(id INTEGER PRIMARY KEY, a TEXT, b TEXT) WITHOUT ROWID"
    connection, plan, text_columns = text_table((b"plain", b"text"), definition=definition)

    assert value_checks.scan_text(connection, plan, text_columns) is None
