"""import_sqlite under faults: killed, interrupted, or cut off from PostgreSQL mid-copy.

The import runs as a real child process against the test database; the test waits until the
server is executing the COPY of the large table, then strikes.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from caloria.models import FoodEntry, User
from dbops.models import ImportRun
from dbops.sqlite_import.report import Progress
from tests.conftest import PROJECT_ROOT, clean_environment, leave_free

pytestmark = pytest.mark.django_db(transaction=True)

LARGE_TABLE_ROWS = 300_000


@pytest.fixture
def large_source(empty_source):
    """A project database with one user and enough food entries for a copy of seconds."""
    with sqlite3.connect(empty_source) as source:
        source.execute(
            "INSERT INTO caloria_user (id, password, is_superuser, username, first_name, "
            "last_name, email, is_staff, is_active, date_joined, is_vip) VALUES "
            "(1, '!', 0, 'big', '', '', 'big@example.com', 0, 1, '2025-01-01 00:00:00', 0)"
        )
        source.executemany(
            "INSERT INTO caloria_foodentry (id, user_id, eaten_at, name, calories, protein, "
            "carbs, fat, meal, notes, created_at) VALUES (?, 1, ?, ?, ?, 1.5, NULL, 2.25, "
            "'lunch', '', '2025-01-01 00:00:00')",
            (
                (n, f"2025-01-01 00:00:{n % 60:02d}.{n % 1000000:06d}", f"food {n}", n % 3000)
                for n in range(1, LARGE_TABLE_ROWS + 1)
            ),
        )
    source.close()
    return empty_source


def start_import(path, database_url, tmp_path, *options):
    env_file = tmp_path / "fault.env"
    env_file.write_text("")
    return subprocess.Popen(
        [sys.executable, "manage.py", "import_sqlite", str(path), "--noinput", *options],
        cwd=PROJECT_ROOT,
        env=clean_environment(
            CALORIA_ENV="test",
            DATABASE_URL=database_url,
            CALORIA_ENV_FILE=str(env_file),
            DBOPS_BACKUP_DIR=str(tmp_path / "backups"),
            PYTHONUNBUFFERED="1",  # progress lines arrive as they are written
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def copy_backend_pid(table: str, timeout: float = 60) -> int:
    """Wait until a server backend is running the COPY into `table`; return its pid."""
    return backend_pid_running(f'COPY "{table}"%', timeout)


def checksum_backend_pid(table: str, timeout: float = 60) -> int:
    """Wait until a server backend is reading `table` for the verification's checksum."""
    return backend_pid_running(f'COPY (SELECT%FROM "{table}"%', timeout)


def backend_pid_running(query_pattern: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s "
                "AND datname = current_database()",
                [query_pattern],
            )
            row = cursor.fetchone()
        if row:
            return row[0]
        time.sleep(0.01)
    raise AssertionError(f"no query like {query_pattern} started within {timeout} s")


def wait_for_backend_to_end(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid])
            if cursor.fetchone() is None:
                return
        time.sleep(0.05)
    raise AssertionError(f"backend {pid} still running after {timeout} s")


def test_sigkill_during_the_copy_leaves_the_target_untouched_and_a_rerun_succeeds(
    large_source, test_database_url, tmp_path
):
    process = start_import(large_source, test_database_url, tmp_path)
    pid = copy_backend_pid("caloria_foodentry")
    process.kill()
    process.communicate(timeout=30)
    wait_for_backend_to_end(pid)

    assert not User.objects.exists()
    assert not FoodEntry.objects.exists()

    call_command("import_sqlite", str(large_source), "--noinput", verbosity=0)

    assert FoodEntry.objects.count() == LARGE_TABLE_ROWS
    assert ImportRun.objects.filter(status=ImportRun.Status.SUCCEEDED).count() == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_rolls_back_and_records_an_interrupted_run(
    large_source, test_database_url, tmp_path, signum
):
    process = start_import(large_source, test_database_url, tmp_path)
    copy_backend_pid("caloria_foodentry")
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 1
    assert "interrupted" in stderr
    assert "nothing was committed" in stderr
    assert "Traceback" not in stderr
    assert not FoodEntry.objects.exists()
    run = ImportRun.objects.get()
    assert run.status == ImportRun.Status.FAILED
    assert "interrupted" in run.error


def test_a_lost_connection_rolls_back_and_records_the_failure(
    large_source, test_database_url, tmp_path
):
    process = start_import(large_source, test_database_url, tmp_path)
    pid = copy_backend_pid("caloria_foodentry")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 1
    assert "nothing was committed" in stderr
    assert "Traceback" not in stderr
    assert not FoodEntry.objects.exists()
    assert ImportRun.objects.get().status == ImportRun.Status.FAILED


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


def children_of(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(child) for child in found.stdout.split()]


def wait_for_line(process, text: str, timeout: float = 60) -> None:
    """Read the import's (unbuffered) output until a line holds `text`."""
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        if text in line:
            return
        assert time.monotonic() < deadline, f"no line with {text!r} within {timeout} s"
    raise AssertionError(f"the import ended before printing {text!r}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[0]
    return status != "Z"


def test_sigterm_during_preflight_stops_the_child_processes_and_records_it(
    large_source, test_database_url, tmp_path
):
    process = start_import(large_source, test_database_url, tmp_path)
    wait_for_line(process, "Checking every value against its target column")
    children = children_of(process.pid)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)

    assert children, "preflight runs child processes"
    assert not any(alive(child) for child in children)
    assert process.returncode == 1
    assert "interrupted (signal SIGTERM)" in stderr
    assert ImportRun.objects.get().status == ImportRun.Status.FAILED
    assert not User.objects.exists()


def test_a_child_process_that_dies_fails_the_import_cleanly(
    large_source, test_database_url, tmp_path
):
    process = start_import(large_source, test_database_url, tmp_path)
    wait_for_line(process, "Checking every value against its target column")
    for child in children_of(process.pid):
        os.kill(child, signal.SIGKILL)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 1
    assert "child process reading the snapshot ended without an answer (exit code -9)" in stderr
    assert "Traceback" not in stderr
    assert not User.objects.exists()
    assert ImportRun.objects.get().status == ImportRun.Status.FAILED


def test_plain_progress_lines_name_the_table_rate_and_time_left():
    stream = StringIO()
    progress = Progress(stream, verbosity=1, is_terminal=False)
    progress.interval = 0
    progress.start("copying", "caloria_foodentry", total=1000)
    time.sleep(0.01)

    progress.advance(250)

    line = stream.getvalue().splitlines()[-1]
    assert line.startswith("copying caloria_foodentry: 250/1,000 rows, ")
    assert "rows/s" in line and "s left" in line


def test_terminal_progress_rewrites_one_line():
    stream = StringIO()
    progress = Progress(stream, verbosity=1, is_terminal=True)
    progress.interval = 0
    progress.start("copying", "caloria_user", total=10)

    progress.advance(5)
    progress.finish()

    assert stream.getvalue().startswith("\rcopying caloria_user: 5/10 rows")


def test_truncate_without_noinput_off_a_terminal_is_refused(filled_source, monkeypatch):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)

    with pytest.raises(CommandError, match="pass --noinput to confirm"):
        call_command("import_sqlite", str(filled_source), "--truncate")

    assert not User.objects.exists()


def test_import_runs_are_listed_newest_first_and_read_only_in_the_admin(filled_source, client):
    call_command("import_sqlite", str(filled_source), "--dry-run", verbosity=0)
    call_command("import_sqlite", str(filled_source), "--noinput", verbosity=0)
    with pytest.raises(CommandError):
        call_command("import_sqlite", str(filled_source), "--noinput", verbosity=0)
    client.force_login(User.objects.create_superuser("staff", "staff@example.com", "pw"))

    page = client.get("/admin/dbops/importrun/")
    add = client.get("/admin/dbops/importrun/add/")

    assert page.status_code == 200
    content = page.content.decode()
    assert content.index("Failed") < content.index("Succeeded")
    assert add.status_code == 403
    run = ImportRun.objects.first()
    change = client.get(f"/admin/dbops/importrun/{run.pk}/change/")
    assert change.status_code == 200
    assert 'name="_save"' not in change.content.decode()


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


@pytest.mark.parametrize("food_id", [1, LARGE_TABLE_ROWS], ids=["first half", "second half"])
def test_a_bad_value_in_either_half_of_a_big_table_is_found(large_source, food_id):
    # A big table's rows are checked in two processes, half each: both halves count.
    with sqlite3.connect(large_source) as source:
        source.execute("UPDATE caloria_foodentry SET eaten_at = 'soon' WHERE id = ?", [food_id])
    source.close()
    stderr = StringIO()

    with pytest.raises(CommandError):
        call_command("import_sqlite", str(large_source), "--noinput", verbosity=0, stderr=stderr)

    assert (
        "caloria_foodentry.eaten_at: 1 value(s) not a datetime in Django's SQLite format: "
        f"pk {food_id}: 'soon'"
    ) in stderr.getvalue()
    assert not FoodEntry.objects.exists()


# --------------------------------------------------------------------------- sequences

TARGET_FOOD_ID = 400_000  # beyond the source's largest food entry id (LARGE_TABLE_ROWS)


def sequences() -> list[tuple]:
    """pg_sequences of the application's tables (dbops' own history records its runs)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sequencename, last_value FROM pg_sequences "
            "WHERE sequencename NOT LIKE 'dbops%%' ORDER BY 1"
        )
        return cursor.fetchall()


@pytest.fixture
def target_ahead_of_the_source():
    """A target whose food entries go up to TARGET_FOOD_ID, its sequences where the
    application left them; returns pg_sequences as they are."""
    user = User.objects.create(id=5000, username="kept")
    FoodEntry.objects.create(id=TARGET_FOOD_ID, user=user, name="kept", calories=1)
    with connection.cursor() as cursor:
        for table, largest in (("caloria_user", 5000), ("caloria_foodentry", TARGET_FOOD_ID)):
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {largest})")
    return sequences()


def assert_target_and_sequences_unchanged(before):
    assert sequences() == before
    assert list(FoodEntry.objects.values_list("id", flat=True)) == [TARGET_FOOD_ID]
    user = User.objects.get(username="kept")
    assert FoodEntry.objects.create(user=user, name="next", calories=1).id == TARGET_FOOD_ID + 1


def terminate_backend(process, pid):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])


STRIKES_DURING_VERIFICATION = {
    "SIGKILL": lambda process, pid: process.kill(),
    "SIGTERM": lambda process, pid: process.send_signal(signal.SIGTERM),
    "Ctrl-C": lambda process, pid: process.send_signal(signal.SIGINT),
    "lost connection": terminate_backend,
}


@pytest.mark.parametrize(
    "strike", STRIKES_DURING_VERIFICATION.values(), ids=STRIKES_DURING_VERIFICATION
)
def test_an_import_stopped_after_setting_sequences_leaves_them_as_they_were(
    large_source, test_database_url, tmp_path, target_ahead_of_the_source, strike
):
    process = start_import(large_source, test_database_url, tmp_path, "--truncate")
    pid = checksum_backend_pid("caloria_foodentry")
    strike(process, pid)
    process.communicate(timeout=60)
    wait_for_backend_to_end(pid)

    assert process.returncode != 0
    assert_target_and_sequences_unchanged(target_ahead_of_the_source)


def test_an_import_failing_verification_leaves_the_sequences_as_they_were(
    large_source, target_ahead_of_the_source, monkeypatch
):
    from dbops.sqlite_import import plan as plan_module

    original = plan_module.Column.copy_sql
    monkeypatch.setattr(
        plan_module.Column,
        "copy_sql",
        lambda column: "'7'" if column.name == "calories" else original(column),
    )

    with pytest.raises(CommandError, match="verification failed for caloria_foodentry"):
        call_command("import_sqlite", str(large_source), "--noinput", "--truncate", verbosity=0)

    assert_target_and_sequences_unchanged(target_ahead_of_the_source)


def test_an_import_whose_checksum_child_dies_leaves_the_sequences_as_they_were(
    large_source, target_ahead_of_the_source, monkeypatch
):
    from dbops.sqlite_import import verify as checksums

    monkeypatch.setattr(checksums, "sqlite_table_checksum", lambda *args: os._exit(7))

    with pytest.raises(CommandError, match="ended without an answer"):
        call_command("import_sqlite", str(large_source), "--noinput", "--truncate", verbosity=0)

    assert_target_and_sequences_unchanged(target_ahead_of_the_source)


# --------------------------------------------------------------------------- import runs


def test_a_server_restart_during_the_copy_is_recorded_as_one_clean_failure(
    large_source, migrated_cluster_url, throwaway_cluster, tmp_path
):
    process = start_import(large_source, migrated_cluster_url, tmp_path)
    deadline = time.monotonic() + 60
    while not throwaway_cluster.execute(
        "SELECT pid FROM pg_stat_activity WHERE state = 'active' "
        "AND query LIKE 'COPY \"caloria_foodentry\"%'",
        "caloria",
    ):
        assert time.monotonic() < deadline, "the copy never started"
        time.sleep(0.01)

    throwaway_cluster.restart()
    _, stderr = process.communicate(timeout=90)

    assert process.returncode == 1
    assert stderr.strip().splitlines() == [
        "CommandError: import_sqlite failed: lost the connection to database 'default' "
        "(OperationalError: terminating connection due to administrator command); nothing "
        "was committed"
    ]
    [(status, error, rows)] = throwaway_cluster.execute(
        "SELECT status, error, (SELECT count(*) FROM caloria_foodentry) FROM dbops_importrun",
        "caloria",
    )
    assert status == ImportRun.Status.FAILED
    assert error.startswith("lost the connection to database 'default'")
    assert rows == 0


def test_a_killed_import_is_shown_as_abandoned_by_the_next_command(
    large_source, test_database_url, tmp_path, filled_source
):
    process = start_import(large_source, test_database_url, tmp_path)
    pid = copy_backend_pid("caloria_foodentry")
    process.kill()
    process.communicate(timeout=30)
    wait_for_backend_to_end(pid)
    assert ImportRun.objects.get().status == ImportRun.Status.RUNNING

    call_command("import_sqlite", str(filled_source), "--dry-run", verbosity=0)
    after_a_dry_run = ImportRun.objects.get().status  # a dry run writes nothing at all
    call_command("import_sqlite", str(filled_source), "--noinput", verbosity=0)

    assert after_a_dry_run == ImportRun.Status.RUNNING
    run = ImportRun.objects.order_by("started_at").first()
    assert run.status == ImportRun.Status.ABANDONED
    assert run.finished_at is not None
    assert f"its process (pid {process.pid} on " in run.error


def test_a_killed_import_is_shown_as_abandoned_on_the_status_page(
    large_source, test_database_url, tmp_path, client, fresh_health_results
):
    process = start_import(large_source, test_database_url, tmp_path)
    pid = copy_backend_pid("caloria_foodentry")
    process.kill()
    process.communicate(timeout=30)
    wait_for_backend_to_end(pid)
    client.force_login(User.objects.create_superuser("staff", "staff@example.com", "pw"))

    page = client.get("/admin/database/")

    assert page.status_code == 200
    assert "<td>Abandoned</td>" in page.content.decode()
    assert ImportRun.objects.get().status == ImportRun.Status.ABANDONED


def test_an_import_still_running_is_not_taken_for_abandoned(
    large_source, test_database_url, tmp_path, client
):
    process = start_import(large_source, test_database_url, tmp_path, "--truncate")
    deadline = time.monotonic() + 60
    while not ImportRun.objects.filter(status=ImportRun.Status.RUNNING).exists():
        assert time.monotonic() < deadline, "the import never recorded its start"
        time.sleep(0.01)
    process.send_signal(signal.SIGSTOP)  # alive, and not about to finish
    try:
        # --truncate replaces this user, whatever the import had done before it stopped.
        client.force_login(User.objects.create_superuser("staff", "staff@example.com", "pw"))
        listed = client.get("/admin/dbops/importrun/")
        status_while_running = ImportRun.objects.get().status
    finally:
        process.send_signal(signal.SIGCONT)
    process.communicate(timeout=120)

    assert listed.status_code == 200
    assert status_while_running == ImportRun.Status.RUNNING
    assert process.returncode == 0
    assert ImportRun.objects.get().status == ImportRun.Status.SUCCEEDED


def test_an_unexpected_error_is_recorded_as_a_failure(filled_source, monkeypatch):
    from dbops.sqlite_import import verify as checksums

    def broken(*args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(checksums, "postgresql_table_checksum", broken)

    with pytest.raises(CommandError) as raised:
        call_command("import_sqlite", str(filled_source), "--noinput", verbosity=0)

    assert str(raised.value) == (
        "import_sqlite failed: unexpected error (RuntimeError: a bug); nothing was committed"
    )
    run = ImportRun.objects.get()
    assert run.status == ImportRun.Status.FAILED
    assert "RuntimeError: a bug" in run.error
    assert not User.objects.exists()


# --------------------------------------------------------------------------- a full disk


def test_a_snapshot_that_does_not_fit_names_its_directory_and_leaves_nothing(
    filled_source, small_filesystem, settings
):
    settings.DBOPS_BACKUP_DIR = small_filesystem
    leave_free(small_filesystem, 64 * 1024)
    stderr = StringIO()

    with pytest.raises(CommandError) as raised:
        call_command("import_sqlite", str(filled_source), "--noinput", verbosity=0, stderr=stderr)

    message = str(raised.value)
    assert message.startswith(
        f"import_sqlite failed: no room for the snapshot in {small_filesystem / 'imports'}: "
        f"it needs about "
    )
    assert "MiB are free" in message
    assert str(filled_source) + ":" not in message  # the source is not to blame
    assert list((small_filesystem / "imports").iterdir()) == []
    assert not User.objects.exists()
    assert ImportRun.objects.get().status == ImportRun.Status.FAILED
