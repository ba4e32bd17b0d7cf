"""dbops.sqlite_import.verify: the table checksum, whose SQLite side must write rows exactly as
PostgreSQL's COPY TO does."""

import hashlib
import sqlite3
from dataclasses import replace
from io import BytesIO

import pytest
from django.db import connection, models, transaction

from dbops import pgcopy
from dbops.sqlite_import import verify as checksums
from dbops.sqlite_import.plan import column_for
from dbops.sqlite_import.verify import (
    RowLayout,
    TableDigest,
    copy_out_escaped,
)

pytestmark = pytest.mark.django_db


EVERY_CHARACTER = "".join(chr(code) for code in range(1, 128)) + "é☕\U0001f600"


def postgresql_copy_output(*values: str) -> bytes:
    """What COPY TO STDOUT writes for one text column holding each value, in order."""
    output = BytesIO()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE copied (n integer, value text) ON COMMIT DROP")
        cursor.executemany("INSERT INTO copied VALUES (%s, %s)", list(enumerate(values)))
        query = "COPY (SELECT value FROM copied ORDER BY n) TO STDOUT"
        pgcopy.copy_to(connection, cursor, query, output)
    return output.getvalue()


def source_digest(*texts: bytes) -> TableDigest:
    """The digest of one-value rows as the SQLite side joins them, or value by value when a
    value holds the joiner."""
    digest = TableDigest(width=1)
    rows = [(None, text) for text in texts]
    if not digest.add_joined(checksums.CanonicalRows([]).joined(rows), len(rows)):
        digest = TableDigest(width=1)
        digest.add_values([[text] for text in texts])
    return digest


def test_every_character_is_escaped_as_postgresqls_copy_to_escapes_it():
    expected = postgresql_copy_output(EVERY_CHARACTER)

    assert copy_out_escaped(EVERY_CHARACTER.encode()) + b"\n" == expected


def test_both_sides_digest_the_same_rows_to_the_same_checksum():
    values = ["plain", "tab\there", "back\\slash \\N", EVERY_CHARACTER, ""]
    target = TableDigest(width=1)
    target.add_copy_output(postgresql_copy_output(*values))

    source = source_digest(*(value.encode() for value in values))

    assert (source.rows, source.outer.hexdigest()) == (target.rows, target.outer.hexdigest())
    assert source.rows == len(values)


def test_a_nul_inside_a_value_cannot_pass_for_a_row_boundary():
    # Rows are joined by NUL while they are escaped; a NUL of a value must not split it.
    assert source_digest(b"a\x00b").outer.hexdigest() != source_digest(b"a", b"b").outer.hexdigest()


def test_a_row_holding_a_nul_is_one_row_and_leaves_the_others_as_copy_writes_them():
    digest = source_digest(b"x\ty", b"a\x00b", b"z")

    expected = hashlib.sha256(b"x\\ty\n" + b"a\x00b\n" + b"z\n").hexdigest()
    assert (digest.rows, digest.outer.hexdigest()) == (3, expected)


def snapshot_table(*names: str) -> tuple[sqlite3.Connection, RowLayout]:
    """A SQLite table keyed by its rowid, with a row per name, and its checksum layout."""
    fields = [models.IntegerField(primary_key=True), models.CharField(max_length=50)]
    for field, name in zip(fields, ["id", "name"], strict=True):
        field.set_attributes_from_name(name)
    sqlite = sqlite3.connect(":memory:")
    sqlite.text_factory = bytes
    sqlite.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
    sqlite.executemany("INSERT INTO t VALUES (?, ?)", enumerate(names, start=1))
    return sqlite, RowLayout.of("t", [column_for(field) for field in fields], "id")


def checksum_read_by_python(sqlite, layout) -> str:
    """The checksum of the same rows in a table without a rowid of its own, which SQLite
    cannot join by rowid: Python joins its rows."""
    sqlite.execute("CREATE TABLE t_without_rowid (id INTEGER PRIMARY KEY, name TEXT) WITHOUT ROWID")
    sqlite.execute("INSERT INTO t_without_rowid SELECT * FROM t")
    copy = replace(layout, source_table="t_without_rowid")
    return checksums.sqlite_table_checksum(sqlite, copy).digest


NAMES = ["plain", "tab\there", "back\\slash", "line\nbreak", "unit\x1fseparator"]


def test_rows_joined_by_sqlite_have_the_checksum_of_rows_joined_by_python(monkeypatch):
    monkeypatch.setattr(checksums, "FETCH_SIZE", 2)  # three chunks
    sqlite, layout = snapshot_table(*NAMES)

    joined = checksums.sqlite_table_checksum(sqlite, layout)

    assert joined.rows == len(NAMES)
    assert joined.digest == checksum_read_by_python(sqlite, layout)


def test_a_chunk_whose_value_holds_the_row_joiner_is_digested_value_by_value(monkeypatch):
    monkeypatch.setattr(checksums, "FETCH_SIZE", 2)
    sqlite, layout = snapshot_table(*NAMES, "nul\x00inside")
    clean, _ = snapshot_table(*NAMES, "nulinside")

    checksum = checksums.sqlite_table_checksum(sqlite, layout)

    assert checksum.rows == len(NAMES) + 1
    assert checksum.digest == checksum_read_by_python(sqlite, layout)
    assert checksum.digest != checksums.sqlite_table_checksum(clean, layout).digest


def test_a_null_where_the_table_allows_none_can_only_mismatch(monkeypatch):
    # check_consistency --against has no preflight: a NULL name makes the canonical row NULL.
    monkeypatch.setattr(checksums, "FETCH_SIZE", 2)
    sqlite, layout = snapshot_table(*NAMES)
    empty, _ = snapshot_table(*NAMES[:2], "", *NAMES[3:])
    sqlite.execute("UPDATE t SET name = NULL WHERE id = 3")

    checksum = checksums.sqlite_table_checksum(sqlite, layout)

    assert checksum.rows == len(NAMES)
    assert checksum.digest == checksum_read_by_python(sqlite, layout)
    assert checksum.digest != checksums.sqlite_table_checksum(empty, layout).digest


# (id, name, note, flag, at, amount): every kind of value COPY TO writes differently from text.
MIXED_ROWS = [
    (1, "plain", None, True, "2024-02-29 23:59:59.500000", "12.5"),
    (2, "tab\there", "\\N", False, None, None),
    (3, "back\\slash \\N", "", None, "1970-01-01 00:00:00", "0"),
    (4, "line\nbreak", "é☕\r", True, "0001-01-01 00:00:00.000010", "-99999.99"),
]


def mixed_table(rows, storage: str = "") -> tuple[sqlite3.Connection, RowLayout]:
    """The same rows in a SQLite table (as Django stores them) and in a PostgreSQL table."""
    fields = {
        "id": models.IntegerField(primary_key=True),
        "name": models.CharField(max_length=50),
        "note": models.TextField(null=True),
        "flag": models.BooleanField(null=True),
        "at": models.DateTimeField(null=True),
        "amount": models.DecimalField(max_digits=7, decimal_places=2, null=True),
    }
    for name, field in fields.items():
        field.set_attributes_from_name(name)
    layout = RowLayout.of("mixed", [column_for(field) for field in fields.values()], "id")
    sqlite = sqlite3.connect(":memory:")
    sqlite.text_factory = bytes
    sqlite.execute(
        "CREATE TABLE mixed (id INTEGER PRIMARY KEY, name varchar(50), note text, flag bool, "
        f"at datetime, amount decimal){storage}"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE mixed (id integer PRIMARY KEY, name varchar(50) NOT NULL, note text, "
            "flag boolean, at timestamptz, amount numeric(7, 2))"
        )
        for pk, name, note, flag, at, amount in rows:
            sqlite.execute(
                "INSERT INTO mixed VALUES (?, ?, ?, ?, ?, ?)",
                [pk, name, note, flag, at, None if amount is None else float(amount)],
            )
            cursor.execute(
                "INSERT INTO mixed VALUES (%s, %s, %s, %s, %s, %s)",
                [pk, name, note, flag, at and at + "+00", amount],
            )
    return sqlite, layout


@pytest.mark.parametrize("storage", ["", " WITHOUT ROWID"], ids=["rowid", "without rowid"])
@pytest.mark.parametrize(
    "rows", [MIXED_ROWS, [*MIXED_ROWS, (5, "unit\x1fseparator", "\x1f", None, None, None)]]
)
def test_both_sides_give_a_table_of_mixed_values_the_same_checksum(rows, storage, monkeypatch):
    # PostgreSQL writes the values with its output functions, a tab between them and its NULL;
    # the snapshot side joins them by U+001F (in SQLite by rowid, else in Python), and a chunk
    # whose value holds U+001F itself is escaped value by value.
    monkeypatch.setattr(checksums, "FETCH_SIZE", 2)
    sqlite, layout = mixed_table(rows, storage)

    ours = checksums.sqlite_table_checksum(sqlite, layout)
    theirs = checksums.postgresql_table_checksum(connection, layout)

    assert (ours.rows, ours.digest) == (theirs.rows, theirs.digest) == (len(rows), ours.digest)


def test_the_text_backslash_n_and_null_have_different_checksums():
    sqlite, layout = mixed_table(MIXED_ROWS)
    sqlite.execute("UPDATE mixed SET note = NULL WHERE note = '\\N'")

    ours = checksums.sqlite_table_checksum(sqlite, layout)

    assert ours.digest != checksums.postgresql_table_checksum(connection, layout).digest


def test_a_null_row_cannot_be_made_up_for_by_a_value_holding_the_joiners(monkeypatch):
    # A NULL canonical row is left out of SQLite's join; a value holding a row joiner and a
    # separator would restore the counts, so the chunk's NULLs are counted too.
    sqlite, layout = snapshot_table("a", "b", "x\x002\x1fy")
    sqlite.execute("UPDATE t SET name = NULL WHERE id = 2")

    checksum = checksums.sqlite_table_checksum(sqlite, layout)

    assert checksum.rows == 3
    assert checksum.digest == checksum_read_by_python(sqlite, layout)
