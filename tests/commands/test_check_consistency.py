"""check_consistency against the real PostgreSQL server, real SQLite files and child processes
(--against has tests of its own: test_check_consistency_against.py).

Damage that PostgreSQL can undo (dropped tables and columns, replaced constraints, rows) is
done inside the test's transaction, which pytest-django rolls back: DDL is transactional in
PostgreSQL, so the shared test database is whole again after each test. What needs committed
rows or another process uses `transaction=True` or a scratch database of its own.
"""

import json
import shutil
import sqlite3
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from caloria.models import FoodEntry, User
from dbops.management.commands.check_consistency import Command
from tests import pg_driver
from tests.conftest import database_url


def check_consistency(*args) -> str:
    """Run the command in-process; return stdout, or raise CommandError with stdout attached."""
    stdout, stderr = StringIO(), StringIO()
    try:
        call_command("check_consistency", *args, stdout=stdout, stderr=stderr)
    except CommandError as error:
        error.stdout = stdout.getvalue()
        raise
    return stdout.getvalue()


def findings(*args) -> tuple[str, str]:
    """Run a check that must find something; return (stdout, the one-line summary)."""
    with pytest.raises(CommandError) as raised:
        check_consistency(*args)
    assert raised.value.returncode == 1
    return raised.value.stdout, str(raised.value)


def execute(*statements, params=None):
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement, params)


def food_user_constraint() -> str:
    """The name Django gave the foreign key caloria_foodentry.user_id -> caloria_user.id."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, "caloria_foodentry")
    return next(
        name
        for name, info in constraints.items()
        if info["foreign_key"] == ("caloria_user", "id") and info["columns"] == ["user_id"]
    )


def insert_food(pk, user_id) -> int:
    """Insert a food entry bypassing the ORM's checks; `pk` None takes the sequence's next."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO caloria_foodentry (id, user_id, eaten_at, name, calories, meal, notes, "
            "created_at) VALUES (COALESCE(%s, nextval(pg_get_serial_sequence("
            "'caloria_foodentry', 'id'))), %s, now(), 'Toast', 120, '', '', now()) RETURNING id",
            [pk, user_id],
        )
        return cursor.fetchone()[0]


@pytest.fixture
def scratch_database_url(test_database_url):
    """URL of a new, empty PostgreSQL database beside the test database; dropped afterwards."""
    name = f"{connection.settings_dict['NAME']}_consistency_scratch"
    server = connection.get_new_connection(connection.get_connection_params())
    server.autocommit = True
    try:
        with server.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield test_database_url.rsplit("/", 1)[0] + f"/{name}"
        with server.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        server.close()


# --------------------------------------------------------------------------- clean


@pytest.mark.django_db
def test_a_migrated_database_has_no_findings_and_is_silent_at_verbosity_zero():
    assert "check_consistency: no findings" in check_consistency()
    assert check_consistency("-v", "0") == ""


def test_help_names_every_check_and_option():
    parser = Command().create_parser("manage.py", "check_consistency")

    text = " ".join(parser.format_help().split())

    for words in ("unapplied migrations", "sequences behind", "NOT VALID", "--against", "--fix",
                  "--json", "--database", "Exit 0 when clean, 1 with findings"):  # fmt: skip
        assert words in text


# --------------------------------------------------------------------------- migrations, schema


def test_unapplied_migrations_are_reported_with_the_migrate_to_run(manage, scratch_database_url):
    migrated = manage("migrate", "caloria", "0001", CALORIA_ENV="test",
                      DATABASE_URL=scratch_database_url)  # fmt: skip
    assert migrated.returncode == 0, migrated.output

    completed = manage("check_consistency", CALORIA_ENV="test", DATABASE_URL=scratch_database_url)

    assert completed.returncode == 1, completed.output
    assert "finding  migrations: " in completed.stdout
    assert "caloria.0002_longer_password_for_imported_hashes" in completed.stdout
    assert "hint: Run 'manage.py migrate --database default'." in completed.stdout
    # Tables of apps still waiting for their migrations are not reported one by one.
    assert "missing_table" not in completed.stdout
    assert "CommandError: 1 finding(s) in database 'default': migrations 1" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.django_db
@pytest.mark.parametrize(
    "statement, expected",
    [
        (
            "DROP TABLE caloria_weightentry",
            "finding  missing_table caloria_weightentry: model caloria.WeightEntry expects "
            "table caloria_weightentry, which the database lacks",
        ),
        (
            "ALTER TABLE caloria_weightentry DROP COLUMN weight_kg",
            "finding  missing_column caloria_weightentry: table caloria_weightentry lacks "
            "column(s) weight_kg (caloria.WeightEntry.weight_kg)",
        ),
        (
            "DROP TABLE fieldtypes_everyfield_tags",
            "finding  missing_table fieldtypes_everyfield_tags: model "
            "fieldtypes.EveryField_tags expects table fieldtypes_everyfield_tags",
        ),
    ],
)
def test_a_table_or_column_dropped_outside_django_is_reported(statement, expected):
    execute(statement)

    stdout, summary = findings()

    assert expected in stdout
    assert "hint: The migrations of '" in stdout
    assert "manage.py sqlmigrate" in stdout
    assert summary.startswith("1 finding(s) in database 'default': missing_")


# --------------------------------------------------------------------------- sequences


@pytest.mark.django_db
def test_a_sequence_behind_the_largest_key_is_reported_and_fix_resets_it():
    user = User.objects.create(username="ana")
    first = FoodEntry.objects.create(user=user, name="Toast", calories=120)
    insert_food(first.pk + 1000, user.pk)

    stdout, summary = findings()

    assert "finding  sequence caloria_foodentry: sequence " in stdout
    assert f"gives {first.pk + 1} next, but the largest id is {first.pk + 1000}" in stdout
    assert "hint: Run 'manage.py check_consistency --fix --database default'" in stdout
    assert summary == "1 finding(s) in database 'default': sequence 1"

    fixed = check_consistency("--fix")

    assert "fixed    sequence caloria_foodentry: sequence " in fixed
    assert f"the next insert gets {first.pk + 1001}" in fixed
    assert "check_consistency: no findings; fixed 1" in fixed
    assert "check_consistency: no findings" in check_consistency()
    assert FoodEntry.objects.create(user=user, name="Tea", calories=2).pk == first.pk + 1001


@pytest.mark.django_db(transaction=True)
def test_fix_waits_for_a_writer_a_bounded_time_and_then_leaves_the_sequence_reported(
    monkeypatch,
):
    from dbops import consistency as command

    user = User.objects.create(username="ana")
    insert_food(FoodEntry.objects.create(user=user, name="Toast", calories=1).pk + 1000, user.pk)
    monkeypatch.setattr(command, "FIX_LOCK_TIMEOUT_SECONDS", 0.2)
    writer = pg_driver.connect(database_url(connection.settings_dict))
    try:
        with writer.cursor() as cursor:  # what an INSERT takes, held by an open transaction
            cursor.execute("LOCK TABLE caloria_foodentry IN ROW EXCLUSIVE MODE")
        stdout, summary = findings("--fix")
    finally:
        writer.rollback()
        writer.close()

    assert "not fixed: a transaction writing to caloria_foodentry held it for more than 0.2 s" in (
        stdout
    )
    assert summary == "1 finding(s) in database 'default': sequence 1"
    assert "check_consistency: no findings; fixed 1" in check_consistency("--fix")


# --------------------------------------------------------------------------- foreign keys


@pytest.mark.django_db
def test_rows_under_a_not_valid_foreign_key_that_point_at_missing_rows_are_reported():
    name = food_user_constraint()
    execute(f'ALTER TABLE caloria_foodentry DROP CONSTRAINT "{name}"')
    user = User.objects.create(username="ana")
    insert_food(None, user.pk)
    second = insert_food(None, 999999)
    third = insert_food(None, 999998)
    execute(
        f'ALTER TABLE caloria_foodentry ADD CONSTRAINT "{name}" FOREIGN KEY (user_id) '
        f"REFERENCES caloria_user (id) DEFERRABLE INITIALLY DEFERRED NOT VALID"
    )

    stdout, summary = findings()

    assert (
        "finding  foreign_key caloria_foodentry: caloria_foodentry.user_id: 2 row(s) point at "
        f"missing rows of caloria_user: pk {second}: user_id=999999; pk {third}: user_id=999998 "
        f"(constraint {name} is NOT VALID" in stdout
    )
    assert f'VALIDATE CONSTRAINT "{name}"' in stdout
    assert summary == "1 finding(s) in database 'default': foreign_key 1"


@pytest.mark.django_db
def test_a_not_valid_foreign_key_without_dangling_rows_is_not_a_finding():
    name = food_user_constraint()
    execute(f'ALTER TABLE caloria_foodentry DROP CONSTRAINT "{name}"')
    insert_food(None, User.objects.create(username="ana").pk)
    execute(
        f'ALTER TABLE caloria_foodentry ADD CONSTRAINT "{name}" FOREIGN KEY (user_id) '
        f"REFERENCES caloria_user (id) DEFERRABLE INITIALLY DEFERRED NOT VALID"
    )

    stdout = check_consistency("-v", "2")

    assert "check_consistency: no findings" in stdout
    assert "NOT VALID but every row matches" in stdout


def test_rows_of_a_sqlite_database_that_point_at_missing_rows_are_reported(
    filled_source, tmp_path, manage
):
    database = tmp_path / "caloria.sqlite3"
    shutil.copyfile(filled_source, database)
    with sqlite3.connect(database) as writer:
        writer.execute("PRAGMA foreign_keys = OFF")
        writer.execute("UPDATE caloria_foodentry SET user_id = 999 WHERE id = 2")
    writer.close()

    completed = manage(
        "check_consistency", CALORIA_ENV="test", DATABASE_URL=f"sqlite:///{database}"
    )

    assert completed.returncode == 1, completed.output
    assert (
        "finding  foreign_key caloria_foodentry: caloria_foodentry.user_id: 1 row(s) point at "
        "missing rows of caloria_user: pk 2: user_id=999" in completed.stdout
    )
    assert "foreign_key 1" in completed.stderr


# --------------------------------------------------------------------------- output, errors


@pytest.mark.django_db
def test_json_output_carries_every_finding_with_its_hint():
    execute("ALTER TABLE caloria_weightentry DROP COLUMN weight_kg", "DROP TABLE django_session")

    stdout, _ = findings("--json")

    report = json.loads(stdout)
    assert report["ok"] is False
    assert {(f["check"], f["table"]) for f in report["findings"]} == {
        ("missing_column", "caloria_weightentry"),
        ("missing_table", "django_session"),
    }
    assert all(set(f) == {"check", "table", "detail", "hint"} for f in report["findings"])
    assert all(f["hint"] for f in report["findings"])


@pytest.mark.django_db
def test_json_output_of_a_clean_database_is_ok():
    report = json.loads(check_consistency("--json"))

    assert report["ok"] is True
    assert report["findings"] == []


def test_an_unreachable_database_is_a_clear_error_without_the_password(
    manage, unreachable_database_url
):
    completed = manage(
        "check_consistency", CALORIA_ENV="test", DATABASE_URL=unreachable_database_url
    )

    assert completed.returncode == 1
    assert "database 'default' is unreachable (OperationalError" in completed.stderr
    assert "SECRETPW" not in completed.output
    assert "Traceback" not in completed.stderr


@pytest.mark.django_db(transaction=True)  # the child process commits its ConsistencyRun
def test_a_clean_database_exits_0_from_the_command_line(manage, test_database_url):
    completed = manage("check_consistency", CALORIA_ENV="test", DATABASE_URL=test_database_url)

    assert completed.returncode == 0, completed.output
    assert "check_consistency: no findings" in completed.stdout
