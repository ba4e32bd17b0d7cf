"""The child processes that read the snapshot beside the import, and the signals that stop it.

Reading is done in forked processes, not threads: Debian's SQLite is built without lookaside
memory, so every allocation takes its global mutex, and two threads reading at once mostly
wait for each other (half of a 1M-row value check each: 2.9 s in two threads, 2.0 s in two
processes, 3.9 s in one). A fork inherits the import's plans for free, and multiprocessing
flushes stdout and stderr before it forks, so no buffered line is written twice. A child only
reads the snapshot, sends its result back as plain data and leaves with os._exit, so it never
uses or closes the parent's PostgreSQL connection; it ends too when the parent dies.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager, suppress
from typing import Any

from dbops.sqlite_import import source
from dbops.sqlite_import.results import ImportFailed

SUCCEEDED, FAILED = "succeeded", "failed"  # what a child process sends back
# How often a child looks whether its parent is still there.
PARENT_WATCH_SECONDS = 0.2


class ChildFailed(ImportFailed):
    """A child process reading the snapshot failed (`died`: it ended without an answer)."""

    def __init__(self, summary: str, reason: str, died: bool):
        super().__init__(summary)
        self.reason, self.died = reason, died


class Interrupted(BaseException):
    """SIGTERM or Ctrl-C arrived; raised like KeyboardInterrupt so every transaction rolls
    back."""


class ForkedRead:
    """One read of the snapshot in a forked child process with its own connection."""

    def __init__(self, snapshot: source.Snapshot, read: Callable[[sqlite3.Connection], Any]):
        context = multiprocessing.get_context("fork")
        self.receiver, sender = context.Pipe(duplex=False)
        self.process = context.Process(
            target=read_and_send,
            args=(snapshot, read, sender, os.getpid()),
            name="sqlite-read",
            daemon=True,
        )
        self.process.start()
        sender.close()
        self.outcome: tuple | None = None

    def result(self) -> Any:
        """The read's result. A failed read raises sqlite3.DatabaseError (the file could not
        be read) or ChildFailed (anything else, or a child that died)."""
        if self.outcome is None:
            try:
                self.outcome = self.receiver.recv()
            except EOFError:
                self.process.join()
                self.outcome = (FAILED, "died", f"exit code {self.process.exitcode}")
            self.process.join()
            self.receiver.close()
        if self.outcome[0] == SUCCEEDED:
            return self.outcome[1]
        _, kind, text = self.outcome
        if kind == "sqlite":
            raise sqlite3.DatabaseError(text)
        what = "ended without an answer" if kind == "died" else "failed"
        raise ChildFailed(
            f"a child process reading the snapshot {what} ({text}); nothing was committed",
            reason=text,
            died=kind == "died",
        )

    def stop(self) -> None:
        """Kill the child if it still runs (the run failed or was interrupted)."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.receiver.close()


class Workers:
    """The children reading one snapshot, so that every one of them can be stopped."""

    def __init__(self, snapshot: source.Snapshot):
        self.snapshot = snapshot
        self.children: list[ForkedRead] = []

    def read(self, function: Callable[[sqlite3.Connection], Any]) -> ForkedRead:
        child = ForkedRead(self.snapshot, function)
        self.children.append(child)
        return child

    def stop(self) -> None:
        for child in self.children:
            child.stop()


def read_and_send(snapshot: source.Snapshot, read, sender, parent_pid: int) -> None:
    """The child's side of ForkedRead: read, then send (SUCCEEDED, result) or (FAILED, kind,
    text), plain data that always pickles."""
    # Ctrl-C reaches the whole process group: the parent handles it and stops its children.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    end_with_parent(parent_pid)
    try:
        connection = source.open_snapshot(snapshot)
        try:
            outcome = (SUCCEEDED, read(connection))
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        outcome = (FAILED, "sqlite", str(exc))
    except Exception as exc:  # noqa: BLE001 - handed to the parent, which reports it
        outcome = (FAILED, "error", f"{type(exc).__name__}: {exc}")
    with suppress(OSError):  # the parent is gone: nobody to tell
        sender.send(outcome)


def end_with_parent(parent_pid: int) -> None:
    """End this child within PARENT_WATCH_SECONDS of its parent's death, even by SIGKILL: a
    thread watches for the parent to be gone (the child is then another process's child). The
    sqlite3 module lets other threads run while SQLite works, so the watch is never held up."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_WATCH_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@contextmanager
def signals_raise_interrupted():
    """Turn SIGTERM and Ctrl-C into Interrupted, so the transaction rolls back and the run is
    recorded; yields the list of the signals received."""
    received: list[str] = []

    def interrupt(signum, frame):
        name = signal.Signals(signum).name
        received.append(name)
        raise Interrupted(f"signal {name}")

    try:
        previous = {
            signum: signal.signal(signum, interrupt) for signum in (signal.SIGTERM, signal.SIGINT)
        }
    except ValueError:  # not the main thread
        yield received
        return
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
