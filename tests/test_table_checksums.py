"""dbops.table_checksums against the real server, pg_dump and pg_restore: the same rows give the
same checksums whatever the copy's collation and the session's settings; any change shows in
its table's checksum and nowhere else."""

from __future__ import annotations

import subprocess
import uuid

import pytest
from django.db import connection, transaction

from dbops.database import session_of_its_own
from dbops.table_checksums import table_checksums
from tests import pg_driver
from tests.conftest import database_url

pytestmark = pytest.mark.django_db

SCHEMA = """
CREATE TABLE item (
    code text PRIMARY KEY, label varchar(50), amount numeric(10, 2), ratio double precision,
    at timestamptz, day date, span interval, raw bytea, note text, flags jsonb);
CREATE TABLE log (message text, n integer);
CREATE TABLE pair (a varchar(10), b integer, value integer, PRIMARY KEY (a, b));
CREATE TABLE counter (id serial PRIMARY KEY, value integer);
INSERT INTO item VALUES
  ('a', 'lower a', 1.50, 0.1 + 0.2, '2026-03-01 23:30:00+00', '2026-03-01', '1 day 02:03:04',
   '\\x00ff', NULL, '{"b": 1, "a": [1, 2]}'),
  ('B', E'tab\\there', -2.00, 1e-300, '1999-12-31 12:00:00.123456+00', '1999-12-31',
   '-3 months', '', E'line\\nbreak \\\\ back', 'null'),
  ('é', 'accent', 0, 'NaN', NULL, NULL, NULL, NULL, 'N', '[]'),
  ('Z', NULL, NULL, '-Infinity', '2026-07-04 04:05:06+00', '2026-07-04', '0', '\\x5c', '\\N', NULL),
  ('b', 'lower b', 99999999.99, 12345.678, '1970-01-01 00:00:00+00', '1970-01-01', '1 year',
   '\\x0a0d', '', '{}');
INSERT INTO log VALUES ('zeta', 1), ('Alpha', 2), ('alpha', 3), (NULL, NULL), (E'a\\tb', 4),
  ('alpha', 3);
INSERT INTO pair VALUES ('x', 2, 1), ('X', 1, 2), ('x', 1, 3), ('ä', 1, 4);
INSERT INTO counter (value) SELECT g FROM generate_series(1, 2500) AS g;
"""


def admin_execute(*statements: str) -> None:
    admin = pg_driver.connect(database_url(connection.settings_dict, NAME="postgres"))
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        admin.close()


def execute(database: str, sql: str) -> None:
    session = pg_driver.connect(database_url(connection.settings_dict, NAME=database))
    try:
        with session, session.cursor() as cursor:
            cursor.execute(sql)
    finally:
        session.close()


def checksums_of(database: str, *settings: str) -> dict[str, dict]:
    with session_of_its_own("default", database) as session:
        with session.cursor() as cursor:
            for setting in settings:
                cursor.execute(setting)
        return table_checksums(session)


def first_column(database: str, sql: str) -> list:
    session = pg_driver.connect(database_url(connection.settings_dict, NAME=database))
    try:
        with session.cursor() as cursor:
            cursor.execute(sql)
            return [row[0] for row in cursor.fetchall()]
    finally:
        session.close()


@pytest.fixture
def databases(tmp_path):
    """A filled database (the server's default collation, C) and its pg_dump/pg_restore copy in
    a database that sorts text by ICU's English rules."""
    stem = f"{connection.settings_dict['NAME'][:40]}_cks_{uuid.uuid4().hex[:6]}"
    original, copy = f"{stem}_a", f"{stem}_b"
    admin_execute(
        f'CREATE DATABASE "{original}"',
        f"CREATE DATABASE \"{copy}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'",
    )
    try:
        execute(original, SCHEMA)
        dump = tmp_path / "original.dump"
        url = database_url(connection.settings_dict, NAME=original)
        subprocess.run(["pg_dump", "-Fc", "-f", str(dump), url], check=True, timeout=60)
        copy_url = database_url(connection.settings_dict, NAME=copy)
        subprocess.run(
            ["pg_restore", "--no-owner", "--exit-on-error", "-d", copy_url, str(dump)],
            check=True,
            timeout=60,
        )
        yield original, copy
    finally:
        admin_execute(
            f'DROP DATABASE IF EXISTS "{original}" WITH (FORCE)',
            f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)',
        )


def test_a_database_and_its_restored_copy_in_another_collation_have_the_same_checksums(databases):
    original, copy = databases
    # The copy really sorts text otherwise: an ORDER BY of the key would differ.
    order = "SELECT code FROM item ORDER BY code"
    assert first_column(original, order) != first_column(copy, order)

    checksums = checksums_of(original)

    assert checksums == checksums_of(copy)
    assert sorted(checksums) == ["counter", "item", "log", "pair"]
    assert {table: value["rows"] for table, value in checksums.items()} == {
        "counter": 2500,
        "item": 5,
        "log": 6,
        "pair": 4,
    }
    assert all(len(value["sha256"]) == 64 for value in checksums.values())


@pytest.mark.parametrize(
    ("table", "change"),
    [
        ("item", "UPDATE item SET ratio = 0.30000000000000004 + 1e-16 WHERE code = 'a'"),
        ("item", "UPDATE item SET at = at + interval '1 microsecond' WHERE code = 'B'"),
        ("item", "UPDATE item SET note = NULL WHERE code = 'b'"),
        ("log", "UPDATE log SET n = 5 WHERE message = 'zeta'"),
        ("pair", "UPDATE pair SET value = 30 WHERE a = 'x' AND b = 1"),
        ("counter", "DELETE FROM counter WHERE id = 2500"),
    ],
)
def test_one_changed_value_changes_the_checksum_of_its_table_and_of_no_other(
    databases, table, change
):
    original, copy = databases
    execute(copy, change)

    before, after = checksums_of(original), checksums_of(copy)

    assert [name for name in before if before[name] != after[name]] == [table]


def test_the_same_rows_in_another_order_on_disk_have_the_same_checksums(databases):
    original, copy = databases
    execute(
        copy,
        "CLUSTER pair USING pair_pkey; UPDATE log SET n = n; "
        "UPDATE counter SET value = value WHERE id < 100",
    )

    assert checksums_of(original) == checksums_of(copy)


def test_the_sessions_datestyle_time_zone_and_number_formats_do_not_change_the_checksums(
    databases,
):
    original, _ = databases
    odd = (
        "SET DateStyle = 'SQL, DMY'",
        "SET TimeZone = 'Pacific/Chatham'",
        "SET IntervalStyle = 'sql_standard'",
        "SET extra_float_digits = -2",
        "SET bytea_output = 'escape'",
    )
    # These settings really change what COPY writes.
    with session_of_its_own("default", original) as session, session.cursor() as cursor:
        plain = "SELECT at::text, span::text, ratio::text, raw::text FROM item WHERE code = 'a'"
        cursor.execute(plain)
        default_texts = cursor.fetchone()
        for setting in odd:
            cursor.execute(setting)
        cursor.execute(plain)
        assert cursor.fetchone() != default_texts

    assert checksums_of(original, *odd) == checksums_of(original)


def test_the_callers_settings_are_back_after_the_checksums_within_its_transaction(databases):
    original, _ = databases
    with (
        session_of_its_own("default", original) as session,
        transaction.atomic(using=session.alias),
        session.cursor() as cursor,
    ):
        cursor.execute("SET LOCAL DateStyle = 'German'")
        cursor.execute("SET LOCAL TimeZone = 'Asia/Tokyo'")
        table_checksums(session)
        cursor.execute("SELECT current_setting('DateStyle'), current_setting('TimeZone')")
        assert cursor.fetchone() == ("German, DMY", "Asia/Tokyo")


def test_the_checksums_are_those_of_the_callers_snapshot(databases):
    original, _ = databases
    with session_of_its_own("default", original) as session:
        with transaction.atomic(using=session.alias), session.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            first = table_checksums(session)
            execute(original, "INSERT INTO counter (value) VALUES (0)")
            assert table_checksums(session) == first
        later = table_checksums(session)

    assert later["counter"]["rows"] == 2501
    assert later["counter"]["sha256"] != first["counter"]["sha256"]
    assert {k: v for k, v in later.items() if k != "counter"} == {
        k: v for k, v in first.items() if k != "counter"
    }
