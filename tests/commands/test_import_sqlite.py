"""import_sqlite against real SQLite files and the real PostgreSQL server: the copy, the options,
what a run reports and records, and the target. Beside this file: the source file and its
snapshot (test_import_sqlite_source.py), bad values (test_import_sqlite_problems.py) and big
tables (test_import_sqlite_big_tables.py); imports under faults are in tests/faults/.

Every test that imports runs with `transaction=True`: the command commits (or rolls back) its
own transaction, and records an ImportRun outside it, as it does in production.
"""

import hashlib
import json
import sqlite3
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management import CommandError, call_command
from django.db import connection

from caloria.models import FoodEntry, User, WeightEntry
from dbops.models import ImportRun
from dbops.sqlite_import import load, source
from dbops.sqlite_import import plan as plan_module
from tests import import_data
from tests.fieldtypes.models import EveryField, Tag
from tests.importing import execute, failed_import, import_sqlite, imported_tables_are_empty

pytestmark = pytest.mark.django_db(transaction=True)


# --------------------------------------------------------------------------- the copy


def test_it_copies_every_row_and_value_exactly(filled_source):
    stdout, _ = import_sqlite(filled_source)

    assert "every table verified" in stdout
    users = {user.username: user for user in User.objects.all()}
    assert set(users) == {name for name, *_ in import_data.USERS}
    for username, email, is_vip, goal, joined in import_data.USERS:
        user = users[username]
        assert (user.email, user.is_vip, user.daily_calorie_goal) == (email, is_vip, goal)
        assert user.date_joined == joined
    food = list(FoodEntry.objects.order_by("id"))
    assert [
        (f.user.username, f.eaten_at, f.name, f.calories, f.protein, f.carbs, f.fat, f.meal)
        for f in food
    ] == [tuple(row) for row in import_data.FOOD]
    weights = WeightEntry.objects.order_by("id")
    assert [(w.user.username, w.measured_on, w.weight_kg) for w in weights] == [
        tuple(row) for row in import_data.WEIGHTS
    ]


def test_every_field_type_survives_the_round_trip(filled_source):
    import_sqlite(filled_source)

    rows = list(EveryField.objects.order_by("id"))
    assert len(rows) == len(import_data.EVERY_FIELD_ROWS)
    for row, expected in zip(rows, import_data.EVERY_FIELD_ROWS, strict=True):
        for name, value in expected.items():
            actual = getattr(row, name)
            if isinstance(actual, memoryview):
                actual = bytes(actual)
            assert actual == value, name
            if name == "ratio" and value is not None:
                assert actual.hex() == value.hex()
    assert sorted(Tag.objects.values_list("code", flat=True)) == sorted(
        code for code, _ in import_data.TAGS
    )
    assert rows[0].tags.count() == 2


@pytest.mark.parametrize("printf_max_values", [126, 2], ids=["printf", "concatenation"])
def test_copy_lines_are_the_same_built_by_printf_or_by_concatenation(
    filled_source, monkeypatch, printf_max_values
):
    # Tables too wide for one printf call are built by concatenation; both must give the
    # same COPY lines for every field type.
    monkeypatch.setattr(load, "PRINTF_MAX_VALUES", printf_max_values)

    stdout, _ = import_sqlite(filled_source)

    assert "every table verified" in stdout
    assert EveryField.objects.count() == len(import_data.EVERY_FIELD_ROWS)


def recreate_without_rowid(path, table):
    """Rebuild a table as WITHOUT ROWID (same columns, same key), as another tool might."""
    with sqlite3.connect(path) as sqlite:
        (sql,) = sqlite.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", [table]
        ).fetchone()
    sqlite.close()
    rebuilt = sql.replace(" AUTOINCREMENT", "").replace(f'"{table}"', f'"{table}_new"', 1)
    execute(
        path,
        "PRAGMA foreign_keys = OFF",
        rebuilt + " WITHOUT ROWID",
        f'INSERT INTO "{table}_new" SELECT * FROM "{table}"',
        f'DROP TABLE "{table}"',
        f'ALTER TABLE "{table}_new" RENAME TO "{table}"',
    )
    with sqlite3.connect(path) as sqlite, pytest.raises(sqlite3.OperationalError, match="rowid"):
        sqlite.execute(f'SELECT rowid FROM "{table}"')
    sqlite.close()


def test_tables_without_a_rowid_of_their_own_are_copied_and_verified(filled_source):
    # Chunks joined by SQLite follow the rowid; a table without one is copied and checksummed
    # value by value, with the same result.
    for table in ("caloria_foodentry", "fieldtypes_everyfield"):
        recreate_without_rowid(filled_source, table)

    stdout, _ = import_sqlite(filled_source)

    assert "every table verified" in stdout
    assert EveryField.objects.count() == len(import_data.EVERY_FIELD_ROWS)
    assert FoodEntry.objects.count() == len(import_data.FOOD)


def test_rows_lost_by_both_the_copy_and_the_checksum_fail_verification(filled_source, monkeypatch):
    # The copy and the snapshot's checksums read chunks the same way; the source's own row
    # count is the third witness.
    joined_chunks = source.joined_chunks

    def losing_the_food_log(connection, table, *args):
        chunks = joined_chunks(connection, table, *args)
        if table == "caloria_foodentry":
            next(chunks, None)
        yield from chunks

    monkeypatch.setattr(source, "joined_chunks", losing_the_food_log)

    output = failed_import(filled_source)

    assert "verification failed for caloria_foodentry" in output
    assert imported_tables_are_empty()


def test_text_holding_the_bytes_that_join_the_fast_copy_text_arrives_intact(filled_source):
    # The copy joins values by U+001F, rows by NUL and marks NULL by U+001E, and escapes a
    # chunk at once; a chunk whose values hold those is written line by line instead.
    execute(
        filled_source,
        "UPDATE caloria_foodentry SET name = 'unit' || char(31) || 'sep', "
        "notes = 'rec' || char(30) || 'sep' || char(9) || '\\N' WHERE id = 2",
    )

    import_sqlite(filled_source)

    food = FoodEntry.objects.get(id=2)
    assert (food.name, food.notes) == ("unit\x1fsep", "rec\x1esep\t\\N")
    assert FoodEntry.objects.count() == 3


def test_auto_now_add_values_are_kept_not_replaced_by_the_time_of_the_copy(filled_source):
    with sqlite3.connect(filled_source) as source:
        original = source.execute("SELECT id, created_at FROM caloria_foodentry").fetchall()
    source.close()

    import_sqlite(filled_source)

    for pk, created_at in original:
        stored = FoodEntry.objects.get(pk=pk).created_at
        assert stored.strftime("%Y-%m-%d %H:%M:%S.%f") == created_at.ljust(26, "0")[:26]


def test_sequences_are_set_past_the_largest_key_and_to_one_for_empty_tables(filled_source):
    execute(filled_source, "UPDATE caloria_weightentry SET id = id + 500")

    import_sqlite(filled_source)

    largest = WeightEntry.objects.order_by("-id").first().id
    ana = User.objects.get(username="ana")
    created = WeightEntry.objects.create(user=ana, measured_on="2030-01-01", weight_kg=60)
    assert created.id == largest + 1 == 503
    assert not ana.user_permissions.exists()
    ana.user_permissions.add(Permission.objects.first())
    through = User.user_permissions.through.objects.get()
    assert through.id == 1


def test_content_type_and_permission_ids_of_the_source_survive(filled_source):
    execute(
        filled_source,
        "PRAGMA foreign_keys = OFF",
        "UPDATE auth_permission SET content_type_id = content_type_id + 100",
        "UPDATE django_content_type SET id = id + 100",
        "UPDATE django_admin_log SET content_type_id = content_type_id + 100",
        "UPDATE auth_group_permissions SET permission_id = permission_id + 1000",
        "UPDATE auth_permission SET id = id + 1000",
    )

    import_sqlite(filled_source)

    ContentType.objects.clear_cache()
    user_type = ContentType.objects.get(app_label="caloria", model="user")
    assert user_type.id > 100
    assert Permission.objects.order_by("id").first().id > 1000
    assert Group.objects.get(name="Coaches").permissions.count() == 4
    assert LogEntry.objects.get().content_type == user_type


def upper_food_names(column, original):
    if column.name == "name" and column.field.model is FoodEntry:
        return "upper(" + original + ")"
    return original


def unescaped_remarks(column, original):
    # COPY reads an unescaped \\N as NULL; the checksum must not read the text '\\N' so too.
    if column.name == "remark":
        return f"CASE WHEN {column.quoted} = '\\N' THEN NULL ELSE {original} END"
    return original


@pytest.mark.parametrize(
    "corrupt, table",
    [(upper_food_names, "caloria_foodentry"), (unescaped_remarks, "fieldtypes_everyfield")],
    ids=["changed text", "text \\N read as NULL"],
)
def test_a_conversion_bug_fails_verification_rolls_back_and_names_the_table_and_key(
    filled_source, monkeypatch, corrupt, table
):
    """Simulate a conversion bug: the verifier, not the converter, must catch it."""
    original = plan_module.Column.copy_sql
    monkeypatch.setattr(
        plan_module.Column, "copy_sql", lambda column: corrupt(column, original(column))
    )

    output = failed_import(filled_source)

    assert f"verification failed for {table}" in output
    assert "first differing key: 1" in output
    assert imported_tables_are_empty()
    assert ImportRun.objects.get().status == ImportRun.Status.FAILED


# --------------------------------------------------------------------------- options


def test_exclude_leaves_an_app_out_and_reports_it(filled_source):
    stdout, _ = import_sqlite(filled_source, "--exclude", "sessions")

    assert "Skipped (excluded): django_session" in stdout
    assert User.objects.count() == 3


def test_exclude_of_an_unknown_label_is_an_error(filled_source):
    output = failed_import(filled_source, "--exclude", "nosuchapp", "--exclude", "caloria.Nope")

    assert "--exclude nosuchapp: No installed app with label 'nosuchapp'." in output
    assert "--exclude caloria.Nope: Unknown model: caloria.Nope" in output


def test_excluding_a_table_that_others_refer_to_is_refused(filled_source):
    output = failed_import(filled_source, "--exclude", "caloria.User")

    assert "caloria_foodentry.user_id refers to caloria_user, which is excluded" in output
    assert imported_tables_are_empty()


def test_dry_run_reports_and_writes_nothing(filled_source):
    stdout, _ = import_sqlite(filled_source, "--dry-run")

    assert "Dry run: preflight passed" in stdout
    assert imported_tables_are_empty()
    assert not ImportRun.objects.exists()


def test_truncate_replaces_the_rows_already_in_the_target(filled_source):
    import_sqlite(filled_source)
    User.objects.create(username="only-in-target")

    import_sqlite(filled_source, "--truncate")

    assert not User.objects.filter(username="only-in-target").exists()
    assert User.objects.count() == 3


def test_truncate_without_noinput_off_a_terminal_is_refused(filled_source, monkeypatch):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)

    with pytest.raises(CommandError, match="pass --noinput to confirm"):
        call_command("import_sqlite", str(filled_source), "--truncate")

    assert not User.objects.exists()


# --------------------------------------------------------------------------- reports and records


def test_json_report_has_every_table(filled_source, tmp_path):
    report_path = tmp_path / "report.json"

    import_sqlite(filled_source, "--json", str(report_path))

    report = json.loads(report_path.read_text())
    assert report["status"] == "succeeded"
    tables = {table["table"]: table for table in report["tables"]}
    assert tables["fieldtypes_everyfield"]["target_rows"] == 3
    assert all(table["checksum_match"] for table in report["tables"])
    assert report["snapshot_sha256"]


def test_a_failed_run_is_recorded_with_its_reason_after_the_rollback(filled_source, tmp_path):
    execute(filled_source, "UPDATE caloria_foodentry SET calories = 'lots' WHERE id = 2")
    report_path = tmp_path / "report.json"

    failed_import(filled_source, "--json", str(report_path))

    run = ImportRun.objects.get()
    assert run.status == ImportRun.Status.FAILED
    assert "caloria_foodentry.calories" in run.error
    assert json.loads(report_path.read_text())["status"] == "failed"
    # The snapshot is sealed in a child while preflight runs; a failed run waits for it too.
    snapshot = Path(run.snapshot_path)
    assert run.source_sha256 == hashlib.sha256(snapshot.read_bytes()).hexdigest()


def test_quiet_runs_print_nothing_but_errors(filled_source):
    stdout, stderr = StringIO(), StringIO()

    call_command(
        "import_sqlite", str(filled_source), "--noinput", verbosity=0, stdout=stdout, stderr=stderr
    )

    assert stdout.getvalue() == ""
    assert stderr.getvalue() == ""


def test_a_run_logs_one_line_per_table_and_the_summary(filled_source):
    stdout = StringIO()

    call_command("import_sqlite", str(filled_source), "--noinput", stdout=stdout)

    output = stdout.getvalue()
    assert "copying caloria_foodentry: 3 rows in " in output
    assert "\r" not in output
    assert "total" in output and "match" in output


# --------------------------------------------------------------------------- the target


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry run", "import"])
def test_a_non_empty_target_is_refused_and_its_tables_listed(filled_source, dry_run):
    import_sqlite(filled_source)

    output = failed_import(filled_source, *(["--dry-run"] if dry_run else []))

    assert "target tables are not empty: " in output
    assert "caloria_user" in output and "caloria_foodentry" in output
    assert "--truncate" in output
    assert User.objects.count() == 3


def test_a_target_that_is_not_postgresql_is_refused(filled_source, manage, tmp_path):
    target = tmp_path / "target.sqlite3"

    completed = manage(
        "import_sqlite", str(filled_source), "--noinput",
        CALORIA_ENV="test", DATABASE_URL=f"sqlite:///{target}",
    )  # fmt: skip

    assert completed.returncode == 1
    assert "import_sqlite writes to PostgreSQL only" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_a_target_that_is_not_migrated_is_refused(filled_source, manage, test_database_url):
    unmigrated = f"{connection.settings_dict['NAME']}_unmigrated_target"
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{unmigrated}"')
        cursor.execute(f'CREATE DATABASE "{unmigrated}"')
    try:
        completed = manage(
            "import_sqlite", str(filled_source), "--noinput", CALORIA_ENV="test",
            DATABASE_URL=test_database_url.rsplit("/", 1)[0] + f"/{unmigrated}",
        )  # fmt: skip
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{unmigrated}" WITH (FORCE)')

    assert completed.returncode == 1
    assert "target database is not fully migrated" in completed.stderr
    assert "run 'manage.py migrate --database default' first" in completed.stderr
