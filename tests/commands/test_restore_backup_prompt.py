"""`restore_backup --swap` at a terminal: it asks before it swaps, and a run that stops at the
question (answered no, or killed there) leaves the live database as it was."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from tests.conftest import PROJECT_ROOT
from tests.restoring import step_names

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
