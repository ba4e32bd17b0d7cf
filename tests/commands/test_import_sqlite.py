"""import_sqlite against real SQLite files and the real PostgreSQL server.

Every test that imports runs with `transaction=True`: the command commits (or rolls back) its
own transaction, and records an ImportRun outside it, as it does in production.
"""

import errno
import hashlib
import json
import os
import sqlite3
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
from dbops.sqlite_import import load, source, value_checks
from dbops.sqlite_import import plan as plan_module
from tests import import_data
from tests.fieldtypes.models import EveryField, Tag

pytestmark = pytest.mark.django_db(transaction=True)


def import_sqlite(path, *args):
    """Run the command; return (stdout, stderr), or raise CommandError with stderr attached."""
    stdout, stderr = StringIO(), StringIO()
    try:
        call_command("import_sqlite", str(path), "--noinput", *args, stdout=stdout, stderr=stderr)
    except CommandError as error:
        error.stdout, error.stderr = stdout.getvalue(), stderr.getvalue()
        raise
    return stdout.getvalue(), stderr.getvalue()


def failed_import(path, *args) -> str:
    """Run an import that must fail; return everything it said."""
    with pytest.raises(CommandError) as raised:
        import_sqlite(path, *args)
    assert raised.value.returncode == 1
    return f"{raised.value}\n{raised.value.stderr}"


def execute(path, *statements):
    """Change a source file behind Django's back, as other tools (or bugs) do."""
    with sqlite3.connect(path) as source:
        source.execute("PRAGMA ignore_check_constraints = ON")
        for statement in statements:
            source.execute(statement)
    source.close()


def imported_tables_are_empty() -> bool:
    return not (
        User.objects.exists()
        or FoodEntry.objects.exists()
        or WeightEntry.objects.exists()
        or EveryField.objects.exists()
    )


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


# --------------------------------------------------------------------------- the source


def test_the_source_file_is_never_changed(filled_source):
    before = (filled_source.read_bytes(), filled_source.stat().st_mtime_ns)

    import_sqlite(filled_source)

    assert (filled_source.read_bytes(), filled_source.stat().st_mtime_ns) == before


def test_rows_still_in_the_wal_file_are_imported(filled_source):
    execute(filled_source, "PRAGMA journal_mode = WAL")
    writer = sqlite3.connect(filled_source)
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute(
        "INSERT INTO caloria_weightentry (user_id, measured_on, weight_kg) "
        "SELECT id, '2031-01-01', 70 FROM caloria_user WHERE username = 'ana'"
    )
    writer.commit()
    assert os.path.getsize(f"{filled_source}-wal") > 0
    try:
        import_sqlite(filled_source)
    finally:
        writer.close()

    assert WeightEntry.objects.filter(measured_on="2031-01-01").exists()


def test_a_snapshot_with_its_sha256_is_recorded_in_the_import_run(filled_source, settings):
    import_sqlite(filled_source)

    run = ImportRun.objects.get()
    assert run.status == ImportRun.Status.SUCCEEDED
    assert run.source_path == str(filled_source)
    snapshot = Path(run.snapshot_path)
    assert snapshot.parent == Path(settings.DBOPS_BACKUP_DIR) / "imports"
    assert snapshot.stat().st_mode & 0o777 == 0o600
    assert run.source_sha256 == hashlib.sha256(snapshot.read_bytes()).hexdigest()
    assert run.total_rows == sum(table["source_rows"] for table in run.tables)
    food = next(table for table in run.tables if table["table"] == "caloria_foodentry")
    assert food["source_rows"] == food["target_rows"] == 3
    assert food["checksum_match"] is True
    assert run.finished_at >= run.started_at


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "no such file"),
        (b"", "the file is empty"),
        (b"id,name\n1,ana\n", "not a SQLite database"),
    ],
)
def test_a_source_that_is_not_a_sqlite_database_is_refused(tmp_path, content, expected):
    path = tmp_path / "source.sqlite3"
    if content is not None:
        path.write_bytes(content)

    output = failed_import(path)

    assert f"{path}: {expected}" in output


def test_a_directory_is_not_a_source(tmp_path):
    assert f"{tmp_path}: not a file" in failed_import(tmp_path)


def test_a_corrupt_source_is_refused(filled_source):
    data = bytearray(filled_source.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    for page in range(2, len(data) // page_size):
        start = page * page_size
        data[start + 8 : start + 200] = b"\xa5" * 192
    filled_source.write_bytes(bytes(data))

    output = failed_import(filled_source)

    assert "damaged" in output or "cannot be read as SQLite" in output
    assert imported_tables_are_empty()


def break_an_index(path: Path) -> None:
    """Make an index disagree with its table: every page is sound, the entries are wrong."""
    execute(
        path,
        "PRAGMA writable_schema = ON",
        "UPDATE sqlite_master SET sql = "
        '\'CREATE INDEX "food_eaten_at" ON "caloria_foodentry" ("name")\' '
        "WHERE name = 'food_eaten_at'",
    )


def test_the_full_integrity_check_refuses_an_index_that_disagrees_with_its_table(filled_source):
    break_an_index(filled_source)

    output = failed_import(filled_source, "--integrity-check", "full")

    assert "the source database is damaged" in output
    assert "food_eaten_at" in output
    assert imported_tables_are_empty()
    assert ImportRun.objects.get().options["integrity_check"] == "full"


def test_the_quick_check_imports_exactly_despite_a_wrong_source_index(filled_source):
    # The copy reads the table itself, never through an index, so the default check is enough.
    break_an_index(filled_source)

    stdout, _ = import_sqlite(filled_source)

    assert "every table verified" in stdout
    with sqlite3.connect(filled_source) as source:
        rows = source.execute("SELECT id, name FROM caloria_foodentry ORDER BY id").fetchall()
    source.close()
    assert rows and list(FoodEntry.objects.order_by("id").values_list("id", "name")) == rows


def test_a_locked_source_is_refused_with_a_clear_message(filled_source):
    locker = sqlite3.connect(filled_source, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        output = failed_import(filled_source)
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    assert "the database is locked by another process" in output


def test_a_source_without_django_migrations_is_refused(tmp_path):
    path = tmp_path / "other.sqlite3"
    execute(path, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")

    output = failed_import(path)

    assert "has no django_migrations table" in output


def test_a_migration_mismatch_lists_the_differences_and_the_migrate_to_run(filled_source):
    execute(filled_source, "DELETE FROM django_migrations WHERE app = 'caloria'")

    output = failed_import(filled_source)

    assert "migrations applied in the target but not in the source: caloria.0001_initial" in output
    assert "run 'manage.py migrate' against the SQLite database first" in output


# --------------------------------------------------------------------------- bad values


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


# --------------------------------------------------------------------------- the target


def test_a_non_empty_target_is_refused_and_its_tables_listed(filled_source):
    import_sqlite(filled_source)

    output = failed_import(filled_source)

    assert "target tables are not empty: " in output
    assert "caloria_user" in output and "caloria_foodentry" in output
    assert "--truncate" in output
    assert User.objects.count() == 3


def test_truncate_replaces_the_rows_already_in_the_target(filled_source):
    import_sqlite(filled_source)
    User.objects.create(username="only-in-target")

    import_sqlite(filled_source, "--truncate")

    assert not User.objects.filter(username="only-in-target").exists()
    assert User.objects.count() == 3


def test_dry_run_reports_and_writes_nothing(filled_source):
    stdout, _ = import_sqlite(filled_source, "--dry-run")

    assert "Dry run: preflight passed" in stdout
    assert imported_tables_are_empty()
    assert not ImportRun.objects.exists()


@pytest.fixture
def snapshot_folder(settings, tmp_path):
    settings.DBOPS_BACKUP_DIR = tmp_path / "backups"
    return settings.DBOPS_BACKUP_DIR / "imports"


def test_a_dry_run_leaves_no_snapshot_behind(filled_source, snapshot_folder):
    import_sqlite(filled_source, "--dry-run")

    assert list(snapshot_folder.iterdir()) == []


def test_a_failed_dry_run_leaves_no_snapshot_behind(filled_source, snapshot_folder):
    with sqlite3.connect(filled_source) as source:
        source.execute("UPDATE caloria_foodentry SET eaten_at = 'soon'")
    source.close()

    failed_import(filled_source, "--dry-run")

    assert list(snapshot_folder.iterdir()) == []


def test_a_dry_run_keeps_its_snapshot_when_asked(filled_source, snapshot_folder, tmp_path):
    report = tmp_path / "report.json"

    import_sqlite(filled_source, "--dry-run", "--keep-snapshot", "--json", str(report))

    [snapshot] = snapshot_folder.iterdir()
    assert json.loads(report.read_text())["snapshot"] == str(snapshot)


def test_a_real_import_keeps_its_snapshot(filled_source, snapshot_folder):
    import_sqlite(filled_source)

    assert [str(path) for path in snapshot_folder.iterdir()] == [
        ImportRun.objects.get().snapshot_path
    ]


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


def test_a_snapshot_that_cannot_be_synced_to_disk_fails_the_import(filled_source, monkeypatch):
    def cannot_sync(path):
        raise OSError(5, "Input/output error")

    # Forked children inherit the patch: neither the child nor the import's own retry can seal.
    monkeypatch.setattr(source, "seal", cannot_sync)

    output = failed_import(filled_source)

    assert "could not be written to disk (" in output
    assert "Input/output error); nothing was committed" in output
    assert imported_tables_are_empty()
    assert ImportRun.objects.get().status == ImportRun.Status.FAILED


def test_a_failed_sync_of_the_snapshot_is_not_retried(filled_source, monkeypatch):
    # Linux reports lost writes to one fsync only: a second one would pass.
    parent, seal = os.getpid(), source.seal

    def fails_in_the_child(path):
        if os.getpid() != parent:
            raise OSError(5, "Input/output error")
        return seal(path)

    monkeypatch.setattr(source, "seal", fails_in_the_child)

    output = failed_import(filled_source)

    assert "could not be written to disk" in output
    assert imported_tables_are_empty()


@pytest.mark.parametrize("failing, raises", [("directory", False), ("file", True)])
def test_a_directory_that_cannot_be_synced_does_not_fail_the_seal(
    tmp_path, monkeypatch, failing, raises
):
    # Network and FUSE file systems may refuse to fsync a directory; never a file.
    snapshot = tmp_path / "snapshot.sqlite3"
    snapshot.write_bytes(b"SQLite format 3\x00")
    directory = tmp_path.stat().st_ino
    sync = os.fsync

    def refuse(fd):
        is_directory = os.fstat(fd).st_ino == directory
        if is_directory == (failing == "directory"):
            raise OSError(errno.EINVAL, "Invalid argument")
        sync(fd)

    monkeypatch.setattr(os, "fsync", refuse)

    if raises:
        with pytest.raises(OSError):
            source.seal(snapshot)
    else:
        assert source.seal(snapshot) == hashlib.sha256(snapshot.read_bytes()).hexdigest()


def test_sealing_a_snapshot_syncs_it_and_its_directory(tmp_path, monkeypatch):
    snapshot = tmp_path / "snapshot.sqlite3"
    snapshot.write_bytes(b"SQLite format 3\x00 and more")
    synced = []
    sync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.fstat(fd).st_ino) or sync(fd))

    digest = source.seal(snapshot)

    assert digest == hashlib.sha256(snapshot.read_bytes()).hexdigest()
    assert synced == [snapshot.stat().st_ino, tmp_path.stat().st_ino]


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
