"""import_sqlite and big tables: a table with many rows is loaded without its indexes and
foreign keys, which are back as migrate made them afterwards, whether the import commits or
is rolled back. The tests read the catalog (pg_index, pg_constraint, pg_locks) before, during
and after the import.
"""

import sqlite3

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from caloria.models import FoodEntry
from tests.importing import copy_backend_pid, start_import

pytestmark = pytest.mark.django_db(transaction=True)


def catalog_of_imported_tables():
    """Every index and constraint definition of the tables an import may rebuild."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
            "WHERE indrelid::regclass::text LIKE 'caloria_%%' ORDER BY 1"
        )
        indexes = cursor.fetchall()
        cursor.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated "
            "FROM pg_constraint WHERE conrelid::regclass::text LIKE 'caloria_%%' ORDER BY 1, 2"
        )
        return indexes, cursor.fetchall()


def test_a_big_import_leaves_every_index_and_foreign_key_as_migrate_made_them(large_source):
    before = catalog_of_imported_tables()

    call_command("import_sqlite", str(large_source), "--noinput", verbosity=0)

    assert catalog_of_imported_tables() == before
    assert any("food_user_eaten_at" in name for name, _ in before[0])


def test_a_big_table_is_loaded_without_any_index_or_key(large_source, test_database_url, tmp_path):
    # Maintaining the primary key's index row by row was a quarter of a big table's COPY. The
    # import drops a big table's indexes in its transaction: other sessions still see them,
    # and the import's backend holds each dropped one in ACCESS EXCLUSIVE mode.
    process = start_import(large_source, test_database_url, tmp_path)
    pid = copy_backend_pid("caloria_foodentry")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.indrelid::regclass::text, count(*), count(l.pid) FROM pg_index i "
            "LEFT JOIN pg_locks l ON l.relation = i.indexrelid AND l.pid = %s "
            "AND l.mode = 'AccessExclusiveLock' "
            "WHERE i.indrelid IN ('caloria_foodentry'::regclass, 'caloria_user'::regclass) "
            "GROUP BY 1 ORDER BY 1",
            [pid],
        )
        indexes_and_dropped = cursor.fetchall()
    process.communicate(timeout=120)

    assert process.returncode == 0
    foodentry, user = indexes_and_dropped
    assert foodentry[0] == "caloria_foodentry" and foodentry[1] == foodentry[2] > 0
    assert user[0] == "caloria_user" and user[2] == 0  # one row: loaded with its indexes


def test_bulk_loading_keeps_what_other_tables_and_content_types_need(large_source, monkeypatch):
    # Every table with a row is bulk-loaded: the content types and permissions, whose rows
    # migrate made are deleted first, and the admin log, whose foreign key to content types
    # is checked when its rows are in; ALTER TABLE refuses a table with checks pending. The
    # empty group memberships keep their foreign keys to caloria_user, so its key stays.
    from dbops.sqlite_import import load

    monkeypatch.setattr(load, "BULK_LOAD_MIN_ROWS", 1)
    with sqlite3.connect(large_source) as source:
        source.execute(
            "INSERT INTO django_admin_log (id, action_time, object_id, object_repr, action_flag, "
            "change_message, content_type_id, user_id) SELECT 1, '2025-01-01 00:00:00', '1', "
            "'big', 1, '[]', id, 1 FROM django_content_type WHERE model = 'user'"
        )
    source.close()
    before = catalog_of_imported_tables()

    call_command("import_sqlite", str(large_source), "--noinput", verbosity=0)

    assert catalog_of_imported_tables() == before
    with connection.cursor() as cursor:
        cursor.execute("SELECT object_repr FROM django_admin_log")
        assert cursor.fetchall() == [("big",)]


def test_a_big_import_that_fails_verification_restores_indexes_and_foreign_keys(
    large_source, monkeypatch
):
    from dbops.sqlite_import import plan as plan_module

    original = plan_module.Column.copy_sql
    monkeypatch.setattr(
        plan_module.Column,
        "copy_sql",
        lambda column: "'7'" if column.name == "calories" else original(column),
    )
    before = catalog_of_imported_tables()

    with pytest.raises(CommandError, match="verification failed for caloria_foodentry"):
        call_command("import_sqlite", str(large_source), "--noinput", verbosity=0)

    assert catalog_of_imported_tables() == before
    assert not FoodEntry.objects.exists()
