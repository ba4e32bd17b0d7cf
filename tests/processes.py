"""Stopping the servers tests start (sshd, PgBouncer, gunicorn) as their supervisors do."""

from __future__ import annotations

import subprocess


def terminate(process: subprocess.Popen | None, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds; a process that
    already ended (or none) is left as it is."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
