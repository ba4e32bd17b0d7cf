"""import_sqlite stopped once it has set the sequences (killed, interrupted, cut off, failing
verification, its checksum child dying) leaves them as they were; and each run is recorded
once, whatever stopped it: a server restart, a killed process (shown as abandoned, but not
while it still runs), an unexpected error.

The import runs as a real child process against the test database (or a throwaway cluster the
test restarts), or in this process with a part of it broken on purpose.
"""

import os
import signal
import time

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from caloria.models import FoodEntry, User
from dbops.models import ImportRun
from tests import pg_driver
from tests.importing import (
    checksum_backend_pid,
    copy_backend_pid,
    start_import,
    wait_for_backend_to_end,
)

pytestmark = pytest.mark.django_db(transaction=True)


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

    # psycopg2 reads the server's goodbye before it fails; psycopg 3 fails writing the next
    # COPY chunk, before the server's message is read, and can only say the connection went.
    reason = {
        "psycopg2": "terminating connection due to administrator command",
        "psycopg": "the connection is lost",
    }[pg_driver.NAME]
    assert process.returncode == 1
    assert stderr.strip().splitlines() == [
        "CommandError: import_sqlite failed: lost the connection to database 'default' "
        f"(OperationalError: {reason}); nothing was committed"
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
