"""The commands that need a session of their own, behind a real PgBouncer in transaction mode.

Each runs in a child process whose DATABASE_URL points at PgBouncer (DATABASE_POOLER=
pgbouncer), on a database of the test's own (tests/restoring.py's `site`). Without
DATABASE_DIRECT_URL each refuses before doing anything; with it, each does its whole work
over the direct connection. SQL on the side goes through psql, straight to the server.
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


SESSION_COMMANDS = {
    "import_sqlite": ("import_sqlite", "{source}", "--truncate", "--noinput"),
    "dbbackup": ("dbbackup",),
    "verify_backup": ("verify_backup", "--latest"),
    "restore_backup": ("restore_backup", "--latest"),
    "check_consistency": ("check_consistency", "--fix"),
}


def test_without_a_direct_url_each_session_bound_command_refuses_and_does_nothing(
    site, pgbouncer, filled_source
):
    site.backup()  # over the server itself: something verify and restore could work on
    backup_files = sorted(p.name for p in site_backup_dir(site).iterdir())
    before = run_counts(site)
    commands = [
        tuple(part.format(source=filled_source) for part in command)
        for command in SESSION_COMMANDS.values()
    ]

    outcomes = manage_through(pgbouncer, site, *commands, direct=False)

    for name, completed in zip(SESSION_COMMANDS, outcomes, strict=True):
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
