"""import_sqlite and bad values: every value PostgreSQL would refuse is found before anything
is written, and listed with its table, column, key and value, every problem with a capped
sample and its full count; a dry run and an import reach the same verdict.

Every test that imports runs with `transaction=True`, as in test_import_sqlite.py.
"""

import sqlite3
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from caloria.models import FoodEntry
from dbops.sqlite_import import value_checks
from tests.conftest import LARGE_TABLE_ROWS
from tests.importing import execute, failed_import, imported_tables_are_empty

pytestmark = pytest.mark.django_db(transaction=True)


def recreate_without_constraints(path, table):
    """Rebuild a table without NOT NULL, UNIQUE or CHECK, as a careless tool might have."""
    execute(
        path,
        f'ALTER TABLE "{table}" RENAME TO "{table}_old"',
        f'CREATE TABLE "{table}" AS SELECT * FROM "{table}_old"',
        f'DROP TABLE "{table}_old"',
    )


@pytest.mark.parametrize(
    "statements, expected",
    [
        (
            ["UPDATE caloria_foodentry SET calories = 'lots' WHERE id = 2"],
            "caloria_foodentry.calories: 1 value(s) not an integer: pk 2: 'lots'",
        ),
        (
            [f"UPDATE caloria_user SET username = '{'x' * 151}' WHERE username = 'bob'"],
            "caloria_user.username: 1 value(s) longer than max_length 150: pk 3:",
        ),
        (
            ["UPDATE caloria_foodentry SET calories = 5000000000 WHERE id = 1"],
            "caloria_foodentry.calories: 1 value(s) out of range 0..2147483647: pk 1: 5000000000",
        ),
        (
            ["UPDATE caloria_foodentry SET protein = 1.005 WHERE id = 1"],
            "caloria_foodentry.protein: 1 value(s) more than 2 decimal places: pk 1: 1.005",
        ),
        (
            ["UPDATE caloria_foodentry SET fat = 123456 WHERE id = 3"],
            "caloria_foodentry.fat: 1 value(s) more than 5 digits before the decimal point: pk 3",
        ),
        (
            # Python's Decimal reads '1_000'; PostgreSQL's numeric does not.
            ["UPDATE caloria_foodentry SET protein = '1_000' WHERE id = 2"],
            "caloria_foodentry.protein: 1 value(s) text in a decimal column: pk 2: '1_000'",
        ),
        (
            ["UPDATE caloria_foodentry SET name = 'a' || char(0) || 'b' WHERE id = 1"],
            "caloria_foodentry.name: 1 value(s) contains a NUL character",
        ),
        (
            # A valid datetime, then a NUL and junk: length() and substr() stop at the NUL.
            [
                "UPDATE caloria_foodentry SET eaten_at = "
                "'2025-01-01 00:00:00.123456' || char(0) || 'junk' WHERE id = 1"
            ],
            "caloria_foodentry.eaten_at: 1 value(s) contains a NUL character",
        ),
        (
            ["UPDATE fieldtypes_everyfield SET clock = '12:00:00' || char(0) || 'zz' WHERE id = 1"],
            "fieldtypes_everyfield.clock: 1 value(s) contains a NUL character",
        ),
        (
            [
                "UPDATE fieldtypes_everyfield SET token = "
                "'12345678123456781234567812345678' || char(0) || 'zz' WHERE id = 1"
            ],
            "fieldtypes_everyfield.token: 1 value(s) contains a NUL character",
        ),
        (
            ["UPDATE fieldtypes_everyfield SET data = '{}' || char(0) || 'zz' WHERE id = 1"],
            "fieldtypes_everyfield.data: 1 value(s) contains a NUL character",
        ),
        (
            ["UPDATE caloria_foodentry SET name = CAST(x'41ff42' AS TEXT) WHERE id = 2"],
            "caloria_foodentry.name: 1 value(s) invalid UTF-8 (byte 1): pk 2: 'A\\\\xffB'",
        ),
        (
            ["UPDATE caloria_foodentry SET eaten_at = 'yesterday' WHERE id = 3"],
            "caloria_foodentry.eaten_at: 1 value(s) not a datetime in Django's SQLite format: "
            "pk 3: 'yesterday'",
        ),
        (
            ["UPDATE caloria_weightentry SET measured_on = '2025-02-30' WHERE id = 1"],
            "caloria_weightentry.measured_on: 1 value(s) not a date: pk 1: '2025-02-30'",
        ),
        (
            # SQLite's date functions know a year 0; PostgreSQL has none (1 BC precedes 1 AD).
            ["UPDATE caloria_weightentry SET measured_on = '0000-02-29' WHERE id = 1"],
            "caloria_weightentry.measured_on: 1 value(s) not a date: pk 1: '0000-02-29'",
        ),
        (
            ["UPDATE caloria_foodentry SET eaten_at = '0000-12-31 23:00:00' WHERE id = 3"],
            "caloria_foodentry.eaten_at: 1 value(s) not a datetime in Django's SQLite format: "
            "pk 3: '0000-12-31 23:00:00'",
        ),
        (
            ["UPDATE fieldtypes_everyfield SET clock = '25:61:00' WHERE id = 1"],
            "fieldtypes_everyfield.clock: 1 value(s) not a time: pk 1",
        ),
        (
            ["UPDATE fieldtypes_everyfield SET data = '{\"a\": ' WHERE id = 1"],
            "fieldtypes_everyfield.data: 1 value(s) invalid JSON: pk 1",
        ),
        (
            ["UPDATE fieldtypes_everyfield SET flag = 2 WHERE id = 1"],
            "fieldtypes_everyfield.flag: 1 value(s) not a boolean (0 or 1): pk 1: 2",
        ),
        (
            ["UPDATE fieldtypes_everyfield SET token = 'not-a-uuid' WHERE id = 1"],
            "fieldtypes_everyfield.token: 1 value(s) not a UUID",
        ),
        (
            ["UPDATE fieldtypes_everyfield SET address = '300.1.1.1' WHERE id = 2"],
            "fieldtypes_everyfield.address: 1 value(s) not an IP address: pk 2",
        ),
        (
            [
                "PRAGMA foreign_keys = OFF",
                "UPDATE caloria_foodentry SET user_id = 999 WHERE id = 2",
            ],
            "caloria_foodentry.user_id: 1 row(s) point at missing rows of caloria_user: "
            "pk 2: user_id=999",
        ),
    ],
)
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry run", "import"])
def test_each_kind_of_bad_value_is_reported_with_table_key_column_and_value(
    filled_source, statements, expected, dry_run
):
    # A dry run and an import reach the same verdict. (An import leaves what PostgreSQL
    # refuses by itself, loudly, to the load, and lists it once the load was refused.)
    execute(filled_source, *statements)

    output = failed_import(filled_source, *(["--dry-run"] if dry_run else []))

    assert expected in output
    assert "problem(s); nothing was" in output
    assert imported_tables_are_empty()


@pytest.mark.parametrize(
    "column, reason",
    [("calories", "not an integer"), ("protein", "text in a decimal column")],
)
def test_text_with_a_nul_in_a_number_column_is_reported_once_as_not_a_number(
    filled_source, column, reason
):
    execute(filled_source, f"UPDATE caloria_foodentry SET {column} = '12' || char(0) || 'x'")

    output = failed_import(filled_source)

    assert f"caloria_foodentry.{column}: 3 value(s) {reason}: pk 1: " in output
    assert "NUL" not in output
    assert imported_tables_are_empty()


def test_rows_that_break_a_check_constraint_are_a_preflight_problem(filled_source):
    # SQLite does not check CHECK constraints through a read-only connection; PostgreSQL has
    # the same constraint and would refuse the row in the middle of the COPY.
    execute(
        filled_source,
        "UPDATE caloria_foodentry SET fat = -0.05, protein = NULL WHERE id = 1",
        "UPDATE caloria_weightentry SET weight_kg = 0 WHERE id IN (1, 2)",
    )

    output = failed_import(filled_source)

    assert (
        "caloria_foodentry.protein+carbs+fat: 1 value(s) breaking the CHECK constraint "
        "food_macros_not_negative: pk 1: (None, 9, -0.05)" in output
    )
    assert (
        "caloria_weightentry.weight_kg: 2 value(s) breaking the CHECK constraint "
        "weight_kg_in_range: pk 1: 0; pk 2: 0" in output
    )
    assert "nothing was written" in output
    assert "damaged" not in output
    assert imported_tables_are_empty()


def test_a_check_constraint_broken_in_the_half_a_child_checks_is_found(filled_source, monkeypatch):
    monkeypatch.setattr(
        value_checks, "SPLIT_CHECKS_MIN_ROWS", 2
    )  # food rows 1-2 here, 3 in a child
    execute(filled_source, "UPDATE caloria_foodentry SET calories = 50001 WHERE id = 3")

    output = failed_import(filled_source)

    assert "breaking the CHECK constraint food_calories_in_range: pk 3: 50001" in output


def test_null_in_a_not_null_column_is_reported(filled_source):
    recreate_without_constraints(filled_source, "caloria_weightentry")
    execute(filled_source, "UPDATE caloria_weightentry SET weight_kg = NULL WHERE id = 2")

    output = failed_import(filled_source)

    assert "caloria_weightentry.weight_kg: 1 value(s) NULL in a NOT NULL column: pk 2" in output


def test_duplicates_that_break_a_unique_constraint_are_reported(filled_source):
    recreate_without_constraints(filled_source, "caloria_user")
    execute(filled_source, "UPDATE caloria_user SET username = 'ana' WHERE username = 'bob'")

    output = failed_import(filled_source)

    assert "caloria_user.username: 1 value(s) duplicated, breaking a unique constraint" in output


def test_every_problem_is_listed_with_a_capped_sample_and_the_full_count(filled_source):
    moment = "'2025-01-01 00:00:00'"
    values = ", ".join(
        f"({n}, 1, {moment}, 'x', 'lots', '', '', {moment})" for n in range(100, 130)
    )
    execute(
        filled_source,
        "INSERT INTO caloria_foodentry (id, user_id, eaten_at, name, calories, meal, notes, "
        f"created_at) VALUES {values}",
        "UPDATE caloria_weightentry SET measured_on = 'soon'",
    )

    output = failed_import(filled_source)

    assert "caloria_foodentry.calories: 30 value(s) not an integer" in output
    assert "(and 25 more)" in output
    assert "caloria_weightentry.measured_on: 2 value(s) not a date" in output


@pytest.mark.parametrize("food_id", [1, LARGE_TABLE_ROWS], ids=["first half", "second half"])
def test_a_bad_value_in_either_half_of_a_big_table_is_found(large_source, food_id):
    # A big table's rows are checked in two processes, half each: both halves count.
    with sqlite3.connect(large_source) as source:
        source.execute("UPDATE caloria_foodentry SET eaten_at = 'soon' WHERE id = ?", [food_id])
    source.close()
    stderr = StringIO()

    with pytest.raises(CommandError):
        call_command("import_sqlite", str(large_source), "--noinput", verbosity=0, stderr=stderr)

    assert (
        "caloria_foodentry.eaten_at: 1 value(s) not a datetime in Django's SQLite format: "
        f"pk {food_id}: 'soon'"
    ) in stderr.getvalue()
    assert not FoodEntry.objects.exists()
