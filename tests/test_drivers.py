"""dbops under either PostgreSQL driver: `make test` runs dbops' tests twice, on psycopg2
(Caloria's) and on psycopg 3 in a virtualenv without psycopg2 (scripts/test.sh sets
CALORIA_TEST_DRIVER). These tests prove each pass runs on the driver it claims, and that COPY,
the one thing the drivers spell differently, streams both ways on it."""

import importlib
import io
import os

import pytest
from django.db import DatabaseError, connection, transaction

from dbops import pgcopy

EXPECTED_DRIVER = os.environ.get("CALORIA_TEST_DRIVER", "psycopg2")


def test_django_runs_on_the_driver_this_pass_is_for():
    assert connection.Database.__name__ == EXPECTED_DRIVER


def test_psycopg2_is_there_only_in_its_own_pass():
    """The psycopg 3 pass proves nothing if dbops could quietly fall back on psycopg2."""
    try:
        importlib.import_module("psycopg2")
    except ImportError:
        present = False
    else:
        present = True
    assert present == (EXPECTED_DRIVER == "psycopg2")


@pytest.mark.django_db
def test_copy_streams_rows_in_and_out_on_this_driver():
    lines = b"".join(f"{n}\tname {n}\\twith a tab\n".encode() for n in range(5000))
    received = io.BytesIO()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE copied (n integer, name text) ON COMMIT DROP")
        pgcopy.copy_from(connection, cursor, "COPY copied FROM STDIN", io.BytesIO(lines), 1000)
        cursor.execute("SELECT count(*), max(name) FROM copied")
        assert cursor.fetchone() == (5000, "name 999\twith a tab")
        pgcopy.copy_to(
            connection, cursor, "COPY (SELECT * FROM copied ORDER BY n) TO STDOUT", received
        )
    assert received.getvalue() == lines


@pytest.mark.django_db
def test_a_copy_the_server_refuses_raises_djangos_error_with_the_servers_words():
    refused = 'invalid input syntax for type integer: "x"'
    with (
        pytest.raises(DatabaseError, match=refused),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("CREATE TEMPORARY TABLE copied (n integer) ON COMMIT DROP")
        pgcopy.copy_from(connection, cursor, "COPY copied FROM STDIN", io.BytesIO(b"x\n"))
