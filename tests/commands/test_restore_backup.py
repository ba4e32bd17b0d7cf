"""`restore_backup` end to end: real pg_dump backups made by `dbbackup`, restored with the real
pg_restore into the real server, checked, swapped in and rolled back.

A swap renames databases, so every test works on databases of its own (never the test
database pytest-django runs on), named `restore_e2e_{hex}_...` and all dropped afterwards;
the commands run in child processes with DATABASE_URL pointing there. SQL on the side goes
through `psql`, so nothing here depends on the driver the suite runs with.
"""

from __future__ import annotations

import json
import subprocess

from dbops import locks
from tests.restoring import SECRET, clean_environment, psql, server_url, step_names


def test_a_backup_is_restored_beside_the_live_database_and_checked(site):
    filename = site.backup()
    site.sql("DELETE FROM caloria_foodentry WHERE id IN (SELECT id FROM caloria_foodentry LIMIT 5)")

    completed = site.manage("restore_backup", filename)

    assert completed.returncode == 0, completed.stdout + completed.stderr
    [run] = site.runs()
    assert run["action"] == "restore" and run["status"] == "succeeded"
    assert step_names(run) == [
        ("file", "passed"),
        ("create database", "passed"),
        ("pg_restore", "passed"),
        ("migrations", "passed"),
        ("rows", "passed"),
        ("check_consistency", "passed"),
    ]
    restored = run["restored"]
    assert restored.startswith(f"{site.live}_restored_") and len(restored) <= 63
    assert site.databases() == {site.live, restored}
    assert site.foods(restored) == 12  # the backup's rows
    assert site.foods() == 7  # the live database as it was
    assert restored in completed.stdout


def test_restore_compares_the_checksums_recorded_at_backup_and_names_a_table_that_differs(site):
    site.backup()

    passed = site.manage("restore_backup", "--latest")

    assert passed.returncode == 0, passed.stderr
    assert "counts match, checksums match" in passed.stdout
    # One value changed in the users' table, as the record tells it: the counts still agree.
    site.sql(
        "UPDATE dbops_backuprecord SET table_checksums = jsonb_set(table_checksums::jsonb, "
        "'{caloria_user,sha256}', to_jsonb(repeat('0', 64)))"
    )
    failed = site.manage("restore_backup", "--latest")
    assert failed.returncode == 1
    assert failed.stderr.strip().endswith(
        "restore_backup failed at rows: checksums differ: caloria_user (counts equal: 4 at "
        "backup, 4 restored)"
    )


def test_a_failing_check_leaves_the_live_database_alone_and_drops_the_restored_one(site):
    site.backup()
    site.sql(
        "UPDATE dbops_backuprecord SET table_counts = jsonb_set(table_counts::jsonb, "
        "'{caloria_foodentry}', '13')"
    )

    completed = site.manage("restore_backup", "--latest", "--swap", "--noinput", password=SECRET)

    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines()[-1] == (
        "CommandError: restore_backup failed at rows: row counts differ: caloria_foodentry: "
        "13 at backup, 12 restored"
    )
    assert site.databases() == {site.live}  # no restored database left, nothing swapped
    assert site.foods() == 12
    assert site.value(f"SELECT datallowconn FROM pg_database WHERE datname = '{site.live}'") == "t"
    [run] = site.runs()
    assert run["status"] == "failed" and run["action"] == "swap"
    assert step_names(run)[-2:] == [("rows", "failed"), ("drop restored", "passed")]
    assert "sessions" not in [name for name, _ in step_names(run)]
    assert SECRET not in completed.stdout + completed.stderr + json.dumps(run)


def test_keep_restored_keeps_a_database_that_failed_its_checks(site):
    site.backup()
    site.sql(
        "UPDATE dbops_backuprecord SET migrations = "
        "jsonb_set(migrations::jsonb, '{caloria}', '\"0001_initial\"')"
    )

    completed = site.manage("restore_backup", "--latest", "--keep-restored")

    assert completed.returncode == 1
    assert "migrations differ from the record: caloria: 0001_initial recorded" in completed.stderr
    [run] = site.runs()
    assert site.databases() == {site.live, run["restored"]}
    assert f"Kept {run['restored']} (--keep-restored)" in completed.stderr


def test_swap_is_refused_while_another_session_is_connected_and_ends_it_when_told(site):
    filename = site.backup()
    site.sql("DELETE FROM caloria_foodentry WHERE id IN (SELECT id FROM caloria_foodentry LIMIT 5)")
    newer = site.backup()  # a backup after the one restored: its record must survive the swap
    other = subprocess.Popen(
        ["psql", "-X", "-q", "-d", server_url(site.live), "-c", "SELECT pg_sleep(120)"],
        env=clean_environment(PGAPPNAME="caloria-web-worker"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while (
            site.value(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = 'caloria-web-worker'",
                "postgres",
            )
            == "0"
        ):
            assert other.poll() is None, other.stderr.read()

        refused = site.manage("restore_backup", filename, "--swap", "--noinput")

        assert refused.returncode == 1
        assert "1 other session(s) connected: pid " in refused.stderr
        assert "(caloria-web-worker, from 127.0.0.1:" in refused.stderr
        assert "--terminate-sessions" in refused.stderr
        assert other.poll() is None  # left alone
        assert site.databases() == {site.live}
        assert site.foods() == 7
        assert (
            site.value(f"SELECT datallowconn FROM pg_database WHERE datname = '{site.live}'") == "t"
        )

        swapped = site.manage(
            "restore_backup", filename, "--swap", "--noinput", "--terminate-sessions"
        )

        assert swapped.returncode == 0, swapped.stdout + swapped.stderr
        assert other.wait(timeout=30) != 0  # its session was ended
    finally:
        other.kill()
        other.wait()
    refused_run, run = site.runs()  # the new live database shows the whole history
    assert refused_run["status"] == "failed"
    assert run["status"] == "succeeded" and run["action"] == "swap"
    assert [name for name, _ in step_names(run)][-3:] == ["sessions", "history", "swap"]
    assert "ended 1 session(s): pid " in run["steps"][-3]["detail"]
    assert site.foods() == 12  # the live name serves the backup's data
    previous = run["previous"]
    assert previous.startswith(f"{site.live}_previous_")
    assert f"{site.live} now holds {filename}; the database it replaced is kept as {previous}" in (
        swapped.stdout
    )
    assert site.databases() == {site.live, previous}
    assert site.foods(previous) == 7  # kept for rollback
    assert site.value(f"SELECT datallowconn FROM pg_database WHERE datname = '{previous}'") == "t"
    filenames = {row[0] for row in site.sql("SELECT filename FROM dbops_backuprecord")}
    assert filenames == {filename, newer}
    statuses = {row[0] for row in site.sql("SELECT status FROM dbops_backuprecord")}
    assert statuses == {"succeeded"}  # not the backup's own "running" at snapshot time


def test_rollback_puts_the_database_from_before_the_swap_back(site):
    filename = site.backup()
    site.sql("DELETE FROM caloria_foodentry WHERE id IN (SELECT id FROM caloria_foodentry LIMIT 5)")
    assert site.manage("restore_backup", filename, "--swap", "--noinput").returncode == 0
    assert site.foods() == 12

    completed = site.manage("restore_backup", "--rollback", "--noinput")

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert site.foods() == 7  # the data from before the swap
    swap_run, rollback_run = site.runs()
    assert rollback_run["action"] == "rollback" and rollback_run["status"] == "succeeded"
    assert rollback_run["restored"] == swap_run["previous"]
    aside = rollback_run["previous"]
    assert aside.startswith(f"{site.live}_rolledback_")
    assert site.databases() == {site.live, aside}
    assert site.foods(aside) == 12
    again = site.manage("restore_backup", "--rollback", swap_run["previous"], "--noinput")
    assert again.returncode == 1
    assert f"database {swap_run['previous']} no longer exists on the server" in again.stderr
    stranger = site.manage("restore_backup", "--rollback", "postgres", "--noinput")
    assert stranger.returncode == 1
    assert f"postgres was not set aside by a swap of {site.live}" in stranger.stderr
    assert site.databases() == {site.live, aside}


def test_bad_requests_get_one_clear_line_and_change_nothing(site):
    no_backup = site.manage("restore_backup", "--latest")
    assert no_backup.returncode == 1
    assert "No record of a successful backup that retention kept" in no_backup.stderr

    nothing_swapped = site.manage("restore_backup", "--rollback", "--noinput")
    assert nothing_swapped.returncode == 1
    assert f"no swap of {site.live} is recorded: nothing to roll back" in nothing_swapped.stderr

    filename = site.backup()
    unknown = site.manage("restore_backup", "nosuch.psql.bin.gz")
    assert unknown.returncode == 1
    assert "No record of a successful backup named nosuch.psql.bin.gz" in unknown.stderr

    no_terminal = site.manage("restore_backup", filename, "--swap")
    assert no_terminal.returncode == 1
    assert "needs a terminal; pass --noinput" in no_terminal.stderr

    assert site.manage("restore_backup").returncode == 2
    assert site.manage("restore_backup", filename, "--latest").returncode == 2
    both = site.manage("restore_backup", "--rollback", "--swap")
    assert both.returncode == 2
    assert "--swap restores a backup; --rollback swaps by itself" in both.stderr

    assert site.databases() == {site.live}
    assert [run["status"] for run in site.runs()] == ["failed"]  # the rollback with no swap


def test_a_live_database_left_refusing_sessions_by_a_killed_swap_takes_them_again(site):
    site.backup()
    # What a swap killed between stopping new sessions and the rename leaves: no lock held.
    psql("postgres", f'ALTER DATABASE "{site.live}" WITH ALLOW_CONNECTIONS false')

    completed = site.manage("restore_backup", "--latest")

    assert completed.returncode == 0, completed.stderr
    assert f"{site.live} took no new sessions since a swap was interrupted" in completed.stderr
    assert site.value(f"SELECT datallowconn FROM pg_database WHERE datname = '{site.live}'") == "t"


def test_nothing_is_done_while_another_swap_keeps_the_live_database_closed(site):
    site.backup()
    key = locks.key_of_name(site.live)
    holder = subprocess.Popen(
        ["psql", "-X", "-q", "-d", server_url("postgres")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        holder.stdin.write(
            f"SELECT pg_advisory_lock({locks.LIVE_DATABASE_SWAP}, {key});\n"
            f'ALTER DATABASE "{site.live}" WITH ALLOW_CONNECTIONS false;\n\\echo held\n'
        )
        holder.stdin.flush()
        while "held" not in holder.stdout.readline():
            pass

        completed = site.manage("restore_backup", "--latest")

        assert completed.returncode == 1
        assert completed.stderr.strip().endswith(
            f"restore_backup refused: database {site.live} takes no new sessions: a swap by "
            f"another restore_backup is going on"
        )
        allowed = f"SELECT datallowconn FROM pg_database WHERE datname = '{site.live}'"
        assert site.value(allowed, "postgres") == "f"
    finally:
        holder.kill()
        holder.wait()


def test_a_consistency_finding_in_the_restored_copy_fails_the_check_and_swaps_nothing(site):
    """The recorded counts and checksums cannot see a sequence left behind its table's largest
    key (the rows are all there); only check_consistency can, and the copy must not go into
    service with it: the first insert after the swap would fail."""
    site.sql("SELECT setval(pg_get_serial_sequence('caloria_foodentry', 'id'), 1)")
    site.backup()
    site.sql("UPDATE caloria_foodentry SET name = 'changed after the backup' WHERE id = 3")

    completed = site.manage("restore_backup", "--latest", "--swap", "--noinput")

    assert completed.returncode == 1
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "CommandError: restore_backup failed at check_consistency: 1 finding(s): "
        "sequence caloria_foodentry: sequence "
    )
    assert last.endswith(
        "gives 2 next, but the largest id is 12: the next insert fails with a duplicate key"
    )
    [run] = site.runs()
    assert run["status"] == "failed" and run["action"] == "swap" and run["previous"] == ""
    assert step_names(run)[-3:] == [
        ("rows", "passed"),
        ("check_consistency", "failed"),
        ("drop restored", "passed"),
    ]
    assert "sequence caloria_foodentry" in run["steps"][-2]["detail"]
    assert site.databases() == {site.live}  # the copy dropped, as docs/operations.md says
    assert site.value("SELECT name FROM caloria_foodentry WHERE id = 3") == (
        "changed after the backup"
    )
    assert site.value(f"SELECT datallowconn FROM pg_database WHERE datname = '{site.live}'") == "t"


def test_a_backup_that_pg_restore_cannot_restore_leaves_no_half_restored_database(site):
    """A dump can be whole, its sha256 the recorded one, and still not restore: here a CHECK
    calls a function whose body names a table without its schema, which pg_restore (running
    with an empty search_path) cannot find while it copies that table's rows, after the
    schema and other tables went in. The database it was restoring into goes, the live one
    stays as it was."""
    site.sql(
        "CREATE FUNCTION restore_trap_ok(integer) RETURNS boolean LANGUAGE sql "
        "AS 'SELECT $1 > (SELECT count(*) FROM caloria_user) * 0';\n"
        "CREATE TABLE restore_trap (id integer CHECK (restore_trap_ok(id)));\n"
        "INSERT INTO restore_trap VALUES (1);"
    )
    site.backup()
    site.sql("DELETE FROM caloria_foodentry WHERE id IN (SELECT id FROM caloria_foodentry LIMIT 5)")

    completed = site.manage("restore_backup", "--latest", "--swap", "--noinput")

    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines()[-1] == (
        "CommandError: restore_backup failed at pg_restore: the backup does not restore: "
        'error: COPY failed for table "restore_trap": ERROR: relation "caloria_user" does not '
        "exist"
    )
    [run] = site.runs()
    assert run["status"] == "failed" and run["action"] == "swap" and run["previous"] == ""
    assert step_names(run) == [
        ("file", "passed"),
        ("create database", "passed"),
        ("pg_restore", "failed"),
        ("drop restored", "passed"),
    ]
    assert site.databases() == {site.live}
    assert site.foods() == 7
    assert site.value(f"SELECT datallowconn FROM pg_database WHERE datname = '{site.live}'") == "t"
