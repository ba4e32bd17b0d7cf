"""Throwaway PostgreSQL clusters for tests that stop, restart, hang or replicate a server.

The suite's shared server is never stopped: a test that needs a server to go away gets one of
its own, made with `initdb` in a temporary folder on a free port, and removed afterwards.
As root, the server runs as the `postgres` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests import pg_driver


def server_bindir() -> Path:
    """The newest installed PostgreSQL server's bin folder (initdb, pg_ctl, postgres)."""
    found = shutil.which("initdb")
    if found:  # a link on PATH (/usr/local/bin/initdb) to the folder with all of them
        return Path(found).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3])
    )
    if not candidates:
        raise RuntimeError("no PostgreSQL server binaries (initdb) are installed")
    return candidates[-1].parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """One PostgreSQL cluster of a test's own: start, stop, restart, freeze (SIGSTOP)."""

    def __init__(self, settings: dict[str, str] | None = None, standby_of: Cluster | None = None):
        """A new cluster made by initdb; or, with `standby_of` (a started cluster), a hot
        standby of it made by `pg_basebackup -R` (it streams from that cluster once started).
        initdb's pg_hba.conf already lets local replication connections in (trust)."""
        self.bindir = server_bindir()
        self.folder = Path(tempfile.mkdtemp(prefix="caloria-test-cluster-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.port = free_port()
        self.settings = {"fsync": "off", "listen_addresses": "127.0.0.1", **(settings or {})}
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        if self.as_postgres:
            shutil.chown(self.folder, "postgres")
        if standby_of is None:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        else:
            self.settings.setdefault("hot_standby", "on")
            self._run(
                "pg_basebackup", "-D", str(self.data), "-R", "-X", "stream", "-c", "fast",
                "-h", "127.0.0.1", "-p", str(standby_of.port), "-U", "postgres",
            )  # fmt: skip

    def folder_for_server(self, name: str) -> Path:
        """A folder inside the cluster's that the server may write to (an archive)."""
        path = self.folder / name
        path.mkdir()
        if self.as_postgres:
            shutil.chown(path, "postgres")
        return path

    def _run(self, program: str, *args: str) -> None:
        completed = subprocess.run(
            [*self.as_postgres, str(self.bindir / program), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"{program} failed: {completed.stdout}{completed.stderr}")

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = " ".join(f"-c {key}={value}" for key, value in self.settings.items())
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w",
            "-o", f"-p {self.port} -k {self.folder} {options}", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop("fast")
        self.start()

    def server_pids(self) -> list[int]:
        """The postmaster and every process it forked."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(
            ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False
        ).stdout.split()
        return [postmaster, *map(int, children)]

    def freeze(self) -> None:
        """SIGSTOP every server process: connections stay open, nothing answers."""
        for pid in self.server_pids():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self.server_pids():
            os.kill(pid, signal.SIGCONT)

    def execute(self, sql: str, database: str = "postgres") -> list[tuple]:
        connection = pg_driver.connect(self.url(database), connect_timeout=5)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()

    def wal_lsn(self) -> str:
        """Where this primary's WAL ends now."""
        return self.execute("SELECT pg_current_wal_lsn()::text")[0][0]

    def wait_for_replay(self, lsn: str, timeout: float = 30) -> None:
        """Wait until this standby has replayed the WAL up to `lsn` (of its primary)."""
        deadline = time.monotonic() + timeout
        query = f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"
        while not self.execute(query)[0][0]:
            if time.monotonic() > deadline:
                raise AssertionError(f"the standby did not replay up to {lsn} in {timeout} s")
            time.sleep(0.05)

    def wait_for_receipt(self, lsn: str, timeout: float = 30) -> None:
        """Wait until this standby has received (not necessarily replayed) WAL up to `lsn`."""
        deadline = time.monotonic() + timeout
        query = f"SELECT pg_last_wal_receive_lsn() >= '{lsn}'::pg_lsn"
        while not self.execute(query)[0][0]:
            if time.monotonic() > deadline:
                raise AssertionError(f"the standby did not receive WAL up to {lsn} in {timeout} s")
            time.sleep(0.05)

    def wait_until_accepting(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.execute("SELECT 1")
                return
            except pg_driver.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def remove(self) -> None:
        """Stop the server whatever state it is in, and delete its folder."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(OSError, ValueError):
                self.thaw()
            with contextlib.suppress(RuntimeError):
                self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)
