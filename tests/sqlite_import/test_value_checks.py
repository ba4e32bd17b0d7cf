"""The SQL that judges SQLite values and splits the work of checking them, run in SQLite."""

import sqlite3

import pytest
from django.test.utils import isolate_apps

from dbops.sqlite_import import fields as columns
from dbops.sqlite_import import load, plan, source, value_checks


def accepted(condition: str, value) -> bool:
    connection = sqlite3.connect(":memory:")
    try:
        sql = f"SELECT coalesce(({condition.format(c='?1')}), 0)"
        return bool(connection.execute(sql, (value,)).fetchone()[0])
    finally:
        connection.close()


@pytest.mark.parametrize(
    "value, ok",
    [
        ("2024-02-29 23:59:59", True),
        ("2024-02-29 23:59:59.999999", True),
        ("2024-02-29 23:59:59.5", True),
        ("2024-02-29 23:59:59.12345", True),
        ("0001-01-01 00:00:00.000000", True),
        ("0000-12-31 23:59:59.999999", False),  # PostgreSQL has no year 0
        ("2023-02-29 12:00:00", False),  # no 29 February in 2023
        ("2025-04-31 12:00:00.000000", False),
        ("2025-01-01 24:00:00", False),
        ("2025-01-01 12:00:00.", False),
        ("2025-01-01 12:00:00.1234567", False),
        ("2025-01-01 12:00:00.12345a", False),
        ("2025-01-01 12:00:00.1234a", False),
        ("2025-01-01 12:00:00,123456", False),
        ("2025-01-01 12:00:00.12345é", False),
        ("2025-01-01T12:00:00.123456", False),
        ("2025-01-01 12:00:00+00:00", False),
        ("yesterday", False),
        (20250101, False),
        (b"2025-01-01 12:00:00", False),
    ],
)
def test_datetimes_must_be_in_djangos_sqlite_format(value, ok):
    assert accepted(columns.DATETIME_OK, value) is ok


@pytest.mark.parametrize(
    "value, ok",
    [
        ("07:08:09", True),
        ("07:08:09.123456", True),
        ("07:08:09.1", True),
        ("23:59:59.99999", True),
        ("24:00:00", False),
        ("12:60:00", False),
        ("07:08:09.", False),
        ("07:08:09.1234567", False),
        ("07:08:09.12345x", False),
        ("07:08:09.x", False),
        ("7:08:09", False),
        ("07:08", False),
    ],
)
def test_times_must_be_in_djangos_sqlite_format(value, ok):
    assert accepted(columns.TIME_OK, value) is ok


def table_with(rows: int, definition: str) -> sqlite3.Connection:
    connection = sqlite3.connect(":memory:")
    connection.execute(f"CREATE TABLE t {definition}")
    connection.executemany("INSERT INTO t VALUES (?, ?)", ((n, n) for n in range(1, rows + 1)))
    return connection


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


@pytest.mark.parametrize(
    "definition, rowid",
    [
        ("(id INTEGER PRIMARY KEY, rowid)", '"id"'),
        ("(id INTEGER PRIMARY KEY DESC, v)", "rowid"),  # SQLite's exception: not the rowid
        ("(id INT PRIMARY KEY, v)", "rowid"),
        ("(id INTEGER, v, PRIMARY KEY (id, v))", "rowid"),
    ],
)
def test_the_rowid_is_read_through_the_integer_primary_key_that_is_it(definition, rowid):
    connection = table_with(3, definition)

    assert source.rowid_column(connection, "t") == rowid


def test_joined_chunks_hold_every_row_once_in_rowid_order():
    connection = sqlite3.connect(":memory:")
    connection.text_factory = bytes
    connection.execute("CREATE TABLE t (v)")
    rowids = [-(2**62), -5, 0, 7, 8, 9, 2**62]
    connection.executemany("INSERT INTO t (rowid, v) VALUES (?, ?)", ((r, str(r)) for r in rowids))
    connection.execute("INSERT INTO t (rowid, v) VALUES (3, NULL)")  # counted, not joined

    chunks = list(source.joined_chunks(connection, "t", "v", "rowid", 3, "char(10)", "v IS NULL"))

    assert chunks == [
        (b"-4611686018427387904\n-5\n0", 3, None, 0, 0, 0),
        (b"7\n8", 3, 0, 8, 1, 1),
        (b"9\n4611686018427387904", 2, 8, 2**62, 0, 0),
    ]


def test_joined_chunks_follow_a_key_column_whose_name_is_an_alias_of_the_query():
    # ORDER BY "text" would sort by the joined texts, and the chunks would skip rows.
    connection = sqlite3.connect(":memory:")
    connection.text_factory = bytes
    connection.execute('CREATE TABLE t ("text" INTEGER PRIMARY KEY, v)')
    connection.executemany("INSERT INTO t VALUES (?, ?)", [(1, "z"), (2, "a"), (3, "m")])
    rowid = source.rowid_column(connection, "t")

    chunks = list(source.joined_chunks(connection, "t", "v", rowid, 2, "char(10)"))

    assert (rowid, [chunk[:2] for chunk in chunks]) == ('"text"', [(b"z\na", 2), (b"m", 1)])


@pytest.mark.parametrize(
    "text, reason",
    [
        (b"12.5", None),
        (b" \t12.50\n", None),
        (b"+.5", None),
        (b"-0.01", None),
        (b"1e2", None),
        (b"1_000", "text in a decimal column"),
        ("١٢".encode(), "text in a decimal column"),
        (b"12\x1f", "text in a decimal column"),
        ("12\xa0".encode(), "text in a decimal column"),
        (b"NaN", "text in a decimal column"),
        (b"12\x00x", "text in a decimal column"),
        (b"123.456", "more than 2 decimal places"),
        (b"1234.5", "more than 3 digits before the decimal point"),
        (b"1e999999999", "more than 3 digits before the decimal point"),
        (b"1e-999999", "more than 2 decimal places"),
    ],
)
def test_decimal_text_is_accepted_exactly_when_postgresql_reads_it_as_is(text, reason):
    # Python's Decimal alone takes '1_000', other scripts' digits and more kinds of space,
    # which PostgreSQL's numeric refuses in the middle of the COPY.
    assert columns._recheck_decimal(5, 2)(text) == reason


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


def test_copy_text_escapes_a_chunk_as_copys_text_format_reads_it():
    joined = b"1\x1fa\\b\tc\x1f\x1e\x00" + b"2\x1fline\r\nbreak\x1f\\N\x00"

    text = load.copy_text(joined, rows=2, nulls=1, width=3)

    assert text == b"1\ta\\\\b\\tc\t\\N\n" + b"2\tline\\r\\nbreak\t\\\\N\n"


@pytest.mark.parametrize(
    "joined",
    [
        b"1\x1fa\x1fb\x1fc\x00",  # a value holds the value joiner
        b"1\x1fa\x1eb\x1fc\x00",  # or the NULL mark
        b"1\x1fa\x00b\x1fc\x00",  # or the row joiner
    ],
)
def test_copy_text_gives_up_on_a_chunk_whose_values_hold_a_joining_byte(joined):
    assert load.copy_text(joined, rows=1, nulls=0, width=3) is None


@isolate_apps("caloria")
def test_a_check_constraint_names_the_columns_it_reads_or_shows_the_whole_row():
    from django.db import models
    from django.db.models import F, Q
    from django.db.models.lookups import GreaterThan

    class Owner(models.Model):  # noqa: DJ008 - a model for one test
        class Meta:
            app_label = "caloria"

    class Checked(models.Model):  # noqa: DJ008 - a model for one test
        owner = models.ForeignKey(Owner, models.CASCADE)
        amount = models.IntegerField()

        class Meta:
            app_label = "caloria"
            constraints = [
                models.CheckConstraint(condition=Q(owner_id__gt=0), name="by_attname"),
                models.CheckConstraint(condition=GreaterThan(F("amount"), 0), name="expression"),
            ]

    checks = {check.name: check.columns for check in plan.check_constraints(Checked)}

    assert checks == {"by_attname": ("owner_id",), "expression": ("id", "owner_id", "amount")}
