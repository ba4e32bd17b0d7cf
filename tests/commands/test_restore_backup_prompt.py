"""`restore_backup --swap` at a terminal: it asks before it swaps, and a run that stops at the
question (answered no, or killed there) leaves the live database as it was."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from tests.conftest import PROJECT_ROOT, clean_environment
from tests.restoring import server_url, step_names

PROMPT = "Type 'yes' to continue, or 'no' to cancel: "


class Terminal:
    """`manage.py ARGS` with a pseudo-terminal for stdin and output, as a person runs it."""

    def __init__(self, site, *args):
        self.master, replica = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", *args, "--no-color"],
            cwd=PROJECT_ROOT,
            env=site.environment(),
            stdin=replica,
            stdout=replica,
            stderr=replica,
        )
        os.close(replica)
        self.output = ""

    def read_until(self, text: str | None, limit: float = 120) -> None:
        """Read the output until `text` shows (None: until the program closes it)."""
        deadline = time.monotonic() + limit
        while text is None or text not in self.output:
            assert time.monotonic() < deadline, f"never printed {text!r}: {self.output}"
            ready, _, _ = select.select([self.master], [], [], 1)
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:  # EIO: the program is gone and its terminal with it
                data = b""
            if not data:
                assert text is None, f"ended without printing {text!r}: {self.output}"
                return
            self.output += data.decode(errors="replace")

    def answer(self, line: str) -> int:
        os.write(self.master, f"{line}\n".encode())
        self.read_until(None)
        return self.process.wait(timeout=120)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        os.close(self.master)


def test_swap_asks_first_and_no_leaves_everything_as_it_was(site):
    filename = site.backup()
    site.sql("DELETE FROM caloria_foodentry WHERE id IN (SELECT id FROM caloria_foodentry LIMIT 5)")
    terminal = Terminal(site, "restore_backup", filename, "--swap")
    try:
        terminal.read_until(PROMPT)
        assert f"{site.live} will be renamed aside and {site.live}_restored_" in terminal.output
        returncode = terminal.answer("no")
    finally:
        terminal.close()

    assert returncode == 1
    assert "failed at confirm: the operator did not confirm the swap" in terminal.output
    assert site.databases() == {site.live}
    assert site.foods() == 7
    [run] = site.runs()
    assert step_names(run)[-2:] == [("confirm", "failed"), ("drop restored", "passed")]


def test_yes_at_the_prompt_swaps(site):
    filename = site.backup()
    site.sql("DELETE FROM caloria_foodentry WHERE id IN (SELECT id FROM caloria_foodentry LIMIT 5)")
    terminal = Terminal(site, "restore_backup", filename, "--swap")
    try:
        terminal.read_until(PROMPT)
        returncode = terminal.answer("yes")
    finally:
        terminal.close()

    assert returncode == 0, terminal.output
    assert site.foods() == 12
    [run] = site.runs()
    assert ("confirm", "passed") in step_names(run)


def test_another_restore_is_refused_while_one_is_running(site):
    site.backup()
    terminal = Terminal(site, "restore_backup", "--latest", "--swap")
    try:
        terminal.read_until(PROMPT)
        [running] = site.runs()

        second = site.manage("restore_backup", "--latest")

        assert second.returncode == 1
        assert f"restore run {running['id']} (pid {terminal.process.pid} on " in second.stderr
        assert "is still running" in second.stderr
        assert terminal.answer("no") == 1
    finally:
        terminal.close()
    assert site.databases() == {site.live}


def test_a_restore_killed_at_the_prompt_leaves_a_database_the_next_run_drops(site):
    site.backup()
    terminal = Terminal(site, "restore_backup", "--latest", "--swap")
    try:
        terminal.read_until(PROMPT)
        terminal.process.kill()  # SIGKILL: no chance to drop its database
        terminal.process.wait()
    finally:
        terminal.close()
    [killed] = site.runs()
    assert site.databases() == {site.live, killed["restored"]}

    completed = site.manage("restore_backup", "--latest")

    assert completed.returncode == 0, completed.stderr
    assert f"Dropped {killed['restored']}, left by a restore run that was killed" in (
        completed.stderr
    )
    abandoned, succeeded = site.runs()
    assert abandoned["status"] == "abandoned"
    assert site.databases() == {site.live, succeeded["restored"]}


def test_a_session_on_the_restored_database_also_stops_the_swap(site):
    filename = site.backup()
    site.sql("DELETE FROM caloria_foodentry WHERE id IN (SELECT id FROM caloria_foodentry LIMIT 5)")
    terminal = Terminal(site, "restore_backup", filename, "--swap")
    looking = None
    try:
        terminal.read_until(PROMPT)
        [running] = site.runs()
        # Someone opens the restored copy to look at it while the operator reads the question.
        looking = subprocess.Popen(
            [
                "psql",
                "-X",
                "-q",
                "-d",
                server_url(running["restored"]),
                "-c",
                "SELECT pg_sleep(60)",
            ],
            env=clean_environment(PGAPPNAME="a-curious-psql"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        busy = (
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'a-curious-psql' "
            "AND wait_event = 'PgSleep'"
        )
        while site.value(busy, "postgres") == "0":
            assert looking.poll() is None
        returncode = terminal.answer("yes")
    finally:
        terminal.close()
        if looking is not None:
            looking.kill()
            looking.wait()

    assert returncode == 1
    assert "(a-curious-psql, from 127.0.0.1:" in terminal.output
    assert f"on {running['restored']}" in terminal.output
    assert site.databases() == {site.live}  # the restored copy dropped, its session with it
    assert site.foods() == 7
    assert site.value(f"SELECT datallowconn FROM pg_database WHERE datname = '{site.live}'") == "t"
