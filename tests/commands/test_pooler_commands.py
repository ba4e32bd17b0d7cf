"""The commands that need a session of their own, behind a real PgBouncer in transaction mode.

Each runs in a child process whose DATABASE_URL points at PgBouncer (DATABASE_POOLER=
pgbouncer), on a database of the test's own (tests/restoring.py's `site`). Without
DATABASE_DIRECT_URL each refuses before doing anything; with it, each does its whole work
over the direct connection. A swap and a rollback meet PgBouncer's idle server connections to
the live database: refused naming them, done with --terminate-sessions or with PgBouncer
paused. SQL on the side goes through psql, straight to the server.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_ROOT
from tests.pooling import DIRECT_PASSWORD, POOLED_PASSWORD, pooled_environment
from tests.restoring import psql


def manage_through(pgbouncer, site, *commands, direct: bool) -> list[subprocess.CompletedProcess]:
    """Run each `manage.py` command line (a tuple of arguments) through the pooler, all at once
    (they are independent), and return their outcomes in order."""
    environment = pooled_environment(pgbouncer, site.live, direct=direct, **site.env)
    pipes = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    processes = [
        subprocess.Popen(
            [sys.executable, "manage.py", *command],
            cwd=PROJECT_ROOT,
            env=environment,
            text=True,
            **pipes,
        )
        for command in commands
    ]
    outcomes = []
    for command, process in zip(commands, processes, strict=True):
        stdout, stderr = process.communicate(timeout=180)
        outcomes.append(subprocess.CompletedProcess(command, process.returncode, stdout, stderr))
    return outcomes


def run_counts(site) -> dict[str, str]:
    tables = ("backuprecord", "importrun", "restorerun", "consistencyrun")
    query = ", ".join(f"(SELECT count(*) FROM dbops_{table})" for table in tables)
    counts = dict(zip(tables, site.sql(f"SELECT {query}")[0], strict=True))
    counts["foods"] = str(site.foods())
    counts["verified"] = site.value("SELECT count(verified_at) FROM dbops_backuprecord")
    return counts


SESSION_COMMANDS = [
    ("import_sqlite", "{source}", "--truncate", "--noinput"),
    ("dbbackup",),
    ("verify_backup", "--latest"),
    ("restore_backup", "--latest"),
    ("restore_backup", "--rollback", "--noinput"),
    ("check_consistency", "--fix"),
]


def test_without_a_direct_url_each_session_bound_command_refuses_and_does_nothing(
    site, pgbouncer, filled_source
):
    site.backup()  # over the server itself: something verify and restore could work on
    backup_files = sorted(p.name for p in site_backup_dir(site).iterdir())
    before = run_counts(site)
    commands = [
        tuple(part.format(source=filled_source) for part in command) for command in SESSION_COMMANDS
    ]

    outcomes = manage_through(pgbouncer, site, *commands, direct=False)

    for (name, *_), completed in zip(SESSION_COMMANDS, outcomes, strict=True):
        assert completed.returncode == 1, (name, completed.stdout, completed.stderr)
        assert completed.stderr.startswith(
            f"CommandError: {name} refused: database 'default' goes through pgbouncer in "
            f"transaction mode (DBOPS_POOLER), and {name} needs a session of its own"
        ), completed.stderr
        assert 'set DATABASE_DIRECT_URL (DATABASES["direct"])' in completed.stderr
        assert completed.stderr.rstrip().endswith("Nothing was done.")
        assert POOLED_PASSWORD not in completed.stdout + completed.stderr
    assert run_counts(site) == before
    assert sorted(p.name for p in site_backup_dir(site).iterdir()) == backup_files
    assert site.databases() == {site.live}


def test_with_a_direct_url_each_session_bound_command_works_over_it(site, pgbouncer, filled_source):
    def run(*command):
        [completed] = manage_through(pgbouncer, site, command, direct=True)
        output = completed.stdout + completed.stderr
        assert completed.returncode == 0, (command, output)
        assert DIRECT_PASSWORD not in output and POOLED_PASSWORD not in output
        return completed

    run("import_sqlite", str(filled_source), "--truncate", "--noinput")
    run("dbbackup", "--verify")
    run("verify_backup", "--latest")
    restored = run("restore_backup", "--latest")
    checked = run("check_consistency", "--fix")

    assert site.value("SELECT status FROM dbops_importrun") == "succeeded"
    assert site.sql("SELECT database, status, verification FROM dbops_backuprecord") == [
        ["direct", "succeeded", "passed"]
    ]
    assert site.sql("SELECT action, status FROM dbops_restorerun") == [["restore", "succeeded"]]
    assert site.sql("SELECT database, status FROM dbops_consistencyrun") == [
        ["direct", "succeeded"]
    ]
    assert "the live database is unchanged" in restored.stdout
    assert "Checking database 'direct'" in checked.stdout
    # Every run lock went with its session: none is left on a server connection PgBouncer
    # keeps (a lock taken through the pooler would outlive the command that took it).
    locks = psql(
        "postgres",
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        f"WHERE l.locktype = 'advisory' AND d.datname = '{site.live}'",
    )
    assert locks == [["0"]]


def site_backup_dir(site) -> Path:
    return Path(site.env["DBOPS_BACKUP_DIR"])


def pooled_foods(pgbouncer, database: str) -> str:
    """The live database's food entries read through the pooler, which then keeps the server
    connection it used, idle, on that database (as it does for the site's requests)."""
    completed = subprocess.run(
        ["psql", "-X", "-At", "-d", pgbouncer.url(database), "-c",
         "SELECT count(*) FROM caloria_foodentry"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return completed.stdout.strip()


def test_a_swap_behind_pgbouncer_names_its_idle_server_connections_and_ends_them_when_told(
    site, pgbouncer
):
    site.backup()
    site.sql("DELETE FROM caloria_foodentry WHERE id IN (SELECT id FROM caloria_foodentry LIMIT 5)")
    assert pooled_foods(pgbouncer, site.live) == "7"
    swap = ("restore_backup", "--latest", "--swap", "--noinput")

    [refused] = manage_through(pgbouncer, site, swap, direct=True)

    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "1 other session(s) connected: pid " in refused.stderr
    assert "from 127.0.0.1:" in refused.stderr and "--terminate-sessions" in refused.stderr
    assert site.databases() == {site.live}
    assert pooled_foods(pgbouncer, site.live) == "7"  # the pooler's connection was left alone

    [swapped] = manage_through(pgbouncer, site, (*swap, "--terminate-sessions"), direct=True)

    assert swapped.returncode == 0, swapped.stdout + swapped.stderr
    assert "ended 1 session(s): pid " in site.runs()[-1]["steps"][-3]["detail"]
    # PgBouncer connects afresh, to the database that now has the live name.
    assert pooled_foods(pgbouncer, site.live) == "12"
    assert DIRECT_PASSWORD not in swapped.stdout + swapped.stderr


def test_a_rollback_behind_pgbouncer_paused_around_it_needs_no_terminated_sessions(site, pgbouncer):
    site.backup()
    site.sql("DELETE FROM caloria_foodentry WHERE id IN (SELECT id FROM caloria_foodentry LIMIT 5)")
    assert site.manage("restore_backup", "--latest", "--swap", "--noinput").returncode == 0
    assert pooled_foods(pgbouncer, site.live) == "12"

    # The runbook's other way: PAUSE closes PgBouncer's server connections to the database.
    pgbouncer.console(f"PAUSE {site.live}")
    try:
        [rolled_back] = manage_through(
            pgbouncer, site, ("restore_backup", "--rollback", "--noinput"), direct=True
        )
    finally:
        pgbouncer.console(f"RESUME {site.live}")

    assert rolled_back.returncode == 0, rolled_back.stdout + rolled_back.stderr
    swap_run, rollback_run = site.runs()
    assert rollback_run["action"] == "rollback" and rollback_run["status"] == "succeeded"
    assert rollback_run["restored"] == swap_run["previous"]
    assert "no other session on" in rollback_run["steps"][-3]["detail"]
    assert pooled_foods(pgbouncer, site.live) == "7"  # the data from before the swap
