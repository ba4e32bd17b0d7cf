"""check_consistency --against: a PostgreSQL database compared with the SQLite database it
was imported from, with the importer's own checksums (real files, the real server)."""

import sqlite3
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from caloria.models import FoodEntry, WeightEntry
from tests.fieldtypes.models import Tag


def import_and_check_against(path, change=None) -> str:
    """Import `path`, apply `change` to PostgreSQL, and return what --against reports."""
    call_command("import_sqlite", str(path), "--noinput", verbosity=0)
    if change is not None:
        change()
    stdout = StringIO()
    try:
        call_command("check_consistency", "--against", str(path), stdout=stdout)
    except CommandError as error:
        return stdout.getvalue() + str(error)
    return stdout.getvalue()


@pytest.mark.django_db(transaction=True)
def test_a_fresh_import_matches_its_source_which_stays_untouched(filled_source):
    before = (filled_source.read_bytes(), filled_source.stat().st_mtime_ns)

    stdout = import_and_check_against(filled_source)

    assert "check_consistency: no findings" in stdout
    assert (filled_source.read_bytes(), filled_source.stat().st_mtime_ns) == before


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "change, expected",
    [
        (
            lambda: FoodEntry.objects.filter(pk=2).update(name="Salad with dressing"),
            "finding  against caloria_foodentry: 3 row(s) in source.sqlite3, 3 in the "
            "database; checksums differ; first differing key: 2",
        ),
        (
            lambda: WeightEntry.objects.filter(pk=1).delete(),
            "finding  against caloria_weightentry: 2 row(s) in source.sqlite3, 1 in the "
            "database; checksums differ; first differing key: 1",
        ),
        (
            lambda: Tag.objects.filter(pk="b-tag").update(title="Wasp"),
            "finding  against fieldtypes_tag: 4 row(s) in source.sqlite3, 4 in the "
            "database; checksums differ; first differing key: b-tag",
        ),
    ],
    ids=["changed-row", "deleted-row", "text-key"],
)
def test_a_table_that_differs_from_the_source_is_named_with_the_first_differing_key(
    filled_source, change, expected
):
    before = filled_source.read_bytes()

    output = import_and_check_against(filled_source, change)

    assert expected in output
    assert "1 finding(s) in database 'default': against 1" in output
    assert filled_source.read_bytes() == before


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "no such file"),
        (b"id,name\n1,ana\n", "not a SQLite database"),
        ("no-migrations", "not a database of this project (it has no django_migrations table)"),
    ],
)
def test_an_against_path_that_is_not_a_database_of_this_project_is_a_clear_error(
    tmp_path, content, expected
):
    path = tmp_path / "other.sqlite3"
    if content == "no-migrations":
        with sqlite3.connect(path) as other:
            other.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
        other.close()
    elif content is not None:
        path.write_bytes(content)

    with pytest.raises(CommandError) as raised:
        call_command("check_consistency", "--against", str(path), stdout=StringIO())

    assert raised.value.returncode == 1
    assert str(raised.value).startswith(f"--against {path}: {expected}")


@pytest.mark.django_db(transaction=True)
def test_exclude_leaves_out_what_the_import_left_out(filled_source):
    # The food log was left out of the import: compared, it differs; excluded as the import
    # was, the rest matches.
    call_command("import_sqlite", str(filled_source), "--noinput", "--exclude",
                 "caloria.FoodEntry", verbosity=0)  # fmt: skip

    def check(*options) -> str:
        stdout = StringIO()
        try:
            call_command("check_consistency", "--against", str(filled_source), *options,
                         stdout=stdout)  # fmt: skip
        except CommandError as error:
            return stdout.getvalue() + str(error)
        return stdout.getvalue()

    assert "finding  against caloria_foodentry: 3 row(s) in source.sqlite3, 0 in" in check()
    assert "check_consistency: no findings" in check("--exclude", "caloria.FoodEntry")


@pytest.mark.django_db
def test_an_unknown_exclude_is_a_clear_error():
    stdout = StringIO()

    with pytest.raises(CommandError) as refused:
        call_command("check_consistency", "--exclude", "nosuchapp", stdout=stdout)

    assert "--exclude nosuchapp: No installed app with label 'nosuchapp'." in str(refused.value)


@pytest.mark.django_db(transaction=True)
def test_a_virtual_table_in_place_of_a_models_table_is_named_as_such(filled_source):
    call_command("import_sqlite", str(filled_source), "--noinput", verbosity=0)
    with sqlite3.connect(filled_source) as sqlite:
        sqlite.execute("PRAGMA foreign_keys = OFF")
        sqlite.execute('DROP TABLE "caloria_weightentry"')
        sqlite.execute('CREATE VIRTUAL TABLE "caloria_weightentry" USING fts5(note)')
    sqlite.close()
    stdout = StringIO()

    with pytest.raises(CommandError):
        call_command("check_consistency", "--against", str(filled_source), stdout=stdout)

    assert (
        "finding  against caloria_weightentry: the SQLite database has caloria_weightentry as "
        "a virtual table (fts5), which differs by backend" in stdout.getvalue()
    )
