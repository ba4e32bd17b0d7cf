"""import_sqlite and its source: the file it is given (never changed; refused, with the
reason, when it is not a sound SQLite database of this project) and the snapshot it reads
instead (recorded with its SHA-256, kept by a real import, left behind by a dry run only when
asked). Faults of the disk the snapshot is written to are in tests/faults/.

Every test that imports runs with `transaction=True`, as in test_import_sqlite.py.
"""

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest

from caloria.models import FoodEntry, WeightEntry
from dbops.models import ImportRun
from tests.importing import execute, failed_import, import_sqlite, imported_tables_are_empty

pytestmark = pytest.mark.django_db(transaction=True)


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


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry run", "import"])
def test_a_migration_mismatch_lists_the_differences_and_the_migrate_to_run(filled_source, dry_run):
    execute(filled_source, "DELETE FROM django_migrations WHERE app = 'caloria'")

    output = failed_import(filled_source, *(["--dry-run"] if dry_run else []))

    assert "migrations applied in the target but not in the source: caloria.0001_initial" in output
    assert "run 'manage.py migrate' against the SQLite database first" in output


@pytest.mark.parametrize(
    "statements, expected",
    [
        (
            ['ALTER TABLE "caloria_foodentry" DROP COLUMN "notes"'],
            "source table caloria_foodentry lacks column(s) notes (model caloria.FoodEntry); "
            "leave it out with --exclude caloria.FoodEntry if it is not this project's",
        ),
        (
            ['DROP TABLE "caloria_weightentry"'],
            "source has no table caloria_weightentry (model caloria.WeightEntry)",
        ),
        (
            [
                'DROP TABLE "caloria_weightentry"',
                'CREATE VIRTUAL TABLE "caloria_weightentry" USING fts5(note)',
            ],
            "source has caloria_weightentry as a virtual table (fts5), which differs by "
            "backend (model caloria.WeightEntry)",
        ),
    ],
    ids=["missing column", "missing table", "virtual table"],
)
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry run", "import"])
def test_a_table_the_models_expect_and_the_source_lacks_is_named(
    filled_source, statements, expected, dry_run
):
    execute(filled_source, "PRAGMA foreign_keys = OFF", *statements)

    output = failed_import(filled_source, *(["--dry-run"] if dry_run else []))

    assert expected in output


# --------------------------------------------------------------------------- the snapshot


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
