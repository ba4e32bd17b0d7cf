"""The private Django APIs dbops.sqlite_import.django_internals wraps still do what it needs:
these fail loudly when a Django upgrade changes them."""

import sqlite3

from dbops.sqlite_import import django_internals, source
from dbops.sqlite_import.plan import build_plan


def test_a_plain_connection_gets_the_functions_djangos_check_constraints_may_call():
    connection = sqlite3.connect(":memory:")
    django_internals.add_django_functions(connection)

    row = connection.execute(
        "SELECT 'abc' REGEXP 'b+c$', django_date_extract('year', '2024-05-06')"
    )

    assert row.fetchone() == (1, 2024)


def test_snapshot_connections_have_them(tmp_path):
    path = tmp_path / "snapshot.sqlite3"
    sqlite3.connect(path).close()
    connection = source.open_snapshot(source.Snapshot(path, path, 0))

    assert connection.execute("SELECT 'abc' REGEXP 'z'").fetchone() == (0,)


def test_check_constraints_render_as_migrate_wrote_them(filled_source):
    with sqlite3.connect(filled_source) as sqlite:
        schemas = dict(sqlite.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
    sqlite.close()
    checks = {plan.table: plan.checks for plan in build_plan([])[0] if plan.checks}

    assert set(checks) == {"caloria_user", "caloria_foodentry", "caloria_weightentry"}
    for table, table_checks in checks.items():
        for check in table_checks:
            assert f'CONSTRAINT "{check.name}" CHECK ({check.condition})' in schemas[table]
