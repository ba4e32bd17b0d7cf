"""dbops.sqlite_import.fields: the rule of each column kind, run where it runs: the SQL that
judges a value in SQLite, the Python recheck of decimal text, and the canonical text of a
value, which must be the same on the snapshot's side and in PostgreSQL.
"""

import sqlite3
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, models
from django.test.utils import isolate_apps

from caloria.models import User
from dbops.sqlite_import import fields
from dbops.sqlite_import.fields import RULES
from dbops.sqlite_import.mapping import _utc_text_in
from dbops.sqlite_import.plan import column_for
from dbops.sqlite_import.verify import canonical_cursor
from tests.fieldtypes.models import EveryField as EveryFieldStandIn

pytestmark = pytest.mark.django_db


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
    assert accepted(fields.DATETIME_OK, value) is ok


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
    assert accepted(fields.TIME_OK, value) is ok


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
    assert fields._recheck_decimal(5, 2)(text) == reason


def sqlite_canonical(field: models.Field, stored: str) -> str:
    """The snapshot side's canonical text of a value as Django stored it in SQLite."""
    field.set_attributes_from_name("value")
    column = column_for(field)
    with sqlite3.connect(":memory:") as sqlite:
        sqlite.execute("CREATE TABLE t (value)")
        sqlite.execute("INSERT INTO t VALUES (?)", [stored])
        return sqlite.execute(f"SELECT {column.canonical_sql()} FROM t").fetchone()[0]


def postgresql_canonical(kind: str, literal: str, pg_type: str) -> str:
    rule = RULES[kind]
    with canonical_cursor(connection) as cursor:
        sql = rule.postgresql_text.format(c=rule.postgresql.format(c=f"%s::{pg_type}"))
        cursor.execute(f"SELECT {sql}", [literal])
        return cursor.fetchone()[0]


@pytest.mark.parametrize(
    "stored",
    [
        "2024-02-29 23:59:59.999999",
        "2024-02-29 23:59:59.500000",  # PostgreSQL prints '.5'
        "2024-02-29 23:59:50.000000",  # and no fraction at all, not the seconds' zero
        "1970-01-01 00:00:00",
        "2025-06-01 12:00:00.12",
        "0001-01-01 00:00:00.000010",
        "9999-12-31 23:59:59.999999",
    ],
)
def test_a_datetime_has_the_same_canonical_text_on_both_sides(stored):
    source = sqlite_canonical(models.DateTimeField(), stored)

    assert source == postgresql_canonical("DateTimeField", stored + "+00", "timestamptz")


@pytest.mark.parametrize(
    "stored", ["07:08:09.123456", "07:08:09.120000", "23:59:50.000000", "00:00:00", "12:30:00.5"]
)
def test_a_time_has_the_same_canonical_text_on_both_sides(stored):
    source = sqlite_canonical(models.TimeField(), stored)

    assert source == postgresql_canonical("TimeField", stored, "time")


@pytest.mark.parametrize("stored", ["1999-12-31", "0001-01-01", "2024-02-29"])
def test_a_date_has_the_same_canonical_text_on_both_sides(stored):
    assert sqlite_canonical(models.DateField(), stored) == postgresql_canonical(
        "DateField", stored, "date"
    )


def test_the_canonical_texts_do_not_depend_on_the_sessions_datestyle():
    with connection.cursor() as cursor:
        cursor.execute("SET DateStyle = 'German, DMY'")
    try:
        target = postgresql_canonical("DateTimeField", "2024-02-29 23:59:59.5+00", "timestamptz")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET DateStyle")

    assert target == "2024-02-29 23:59:59.5"


@pytest.mark.parametrize(
    "local", ["2024-07-01 14:00:00", "2024-07-01 14:00:00.250000", "0101-01-01 00:00:00"]
)
def test_a_mapped_naive_datetime_has_the_same_canonical_text_as_postgresql(local):
    # The legacy mapping converts naive local times in Python for the checksum, and PostgreSQL
    # reads the zone name in the COPY text.
    source = _utc_text_in(ZoneInfo("Europe/Paris"))(local)

    assert source == postgresql_canonical("DateTimeField", f"{local} Europe/Paris", "timestamptz")


@pytest.mark.parametrize(
    "address",
    [
        "1.2.3.4",
        "::ffff:1.2.3.4",
        "::ffff:0.0.1.2",
        "::1.2.3.4",
        "::1",
        "::",
        "::2",
        "::ffff:0:0",
        "2001:db8::ffff:1.2.3.4",
        "fe80::1:2",
    ],
)
def test_an_ip_address_has_the_same_canonical_text_on_both_sides(address):
    source = fields.ip_canonical(address)

    assert source == postgresql_canonical("GenericIPAddressField", address, "inet")


@pytest.mark.parametrize(
    "document", ["[-0, -0.0, -0.00e1, 0, 1.50, -2]", '{"b": -0.0, "a": [1e2, -1E-2]}']
)
def test_a_json_document_has_the_same_canonical_text_on_both_sides(document):
    source = fields.json_canonical(document)

    assert source == postgresql_canonical("JSONField", document, "jsonb")


# --------------------------------------------------------------------------- which rule


@pytest.mark.parametrize(
    "column_type, kind, detail",
    [
        ("text", "TextField", None),
        ("varchar(20)", "CharField", "longer than max_length 20"),
        ("numeric(7, 3)", "DecimalField", "more than 3 decimal places"),
        ("timestamp with time zone", "DateTimeField", None),
        ("uuid", "UUIDField", None),
        ("jsonb", "JSONField", None),
        ("bigint", "BigIntegerField", None),
    ],
)
def test_a_custom_field_is_imported_by_its_column_type(column_type, kind, detail):
    class Custom(models.Field):
        def get_internal_type(self):
            return "Custom"

        def db_type(self, connection):
            return column_type

    rule = fields.rule_for(Custom())

    assert rule.kind == kind
    if detail:
        assert any(detail in check.reason for check in rule.checks)


def test_a_custom_field_of_an_unknown_column_type_is_refused_naming_it_and_both_types():
    from dbops.sqlite_import.fields import UnsupportedField

    class SearchVector(models.Field):
        def get_internal_type(self):
            return "SearchVector"

        def db_type(self, connection):
            return "tsvector" if connection.vendor == "postgresql" else "text"

    field = SearchVector()
    field.set_attributes_from_name("body")
    field.model = EveryFieldStandIn

    with pytest.raises(UnsupportedField) as refused:
        fields.rule_for(field)

    assert str(refused.value) == (
        "fieldtypes.EveryField.body: SearchVector (a tsvector column in PostgreSQL, text in "
        "SQLite: it differs by backend) is not supported"
    )


def test_a_foreign_key_subclass_of_its_own_kind_is_imported_as_the_key_it_points_at():
    class TreeKey(models.ForeignKey):
        def get_internal_type(self):
            return "TreeKey"

    key = TreeKey("caloria.User", on_delete=models.CASCADE)
    key.set_attributes_from_name("owner")
    key.remote_field.model = User

    assert fields.rule_for(key).kind == "BigIntegerField"


@isolate_apps("tests.fieldtypes")
def test_a_foreign_key_to_a_multi_table_child_is_the_parents_key():
    # A child's primary key is its one-to-one link to the parent's: followed to the end.
    from django.contrib.auth.models import Group

    class Team(Group):
        class Meta:
            app_label = "fieldtypes"

    class Membership(models.Model):
        team = models.ForeignKey(Team, on_delete=models.CASCADE)

        class Meta:
            app_label = "fieldtypes"

        def __str__(self):
            return str(self.team)

    team = Membership._meta.get_field("team")
    assert team.target_field.get_internal_type() == "OneToOneField"
    assert fields.rule_for(team).kind == fields.stored_kind(Group._meta.pk) == "IntegerField"
