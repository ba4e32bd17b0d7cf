"""A backup's bytes to and from an SFTP server through OpenSSH's own `sftp` client.

paramiko (dbops.sftp's session: known hosts, temporary names, renames) moves data in Python:
its downloads run at a quarter of OpenSSH's speed here, and its read-ahead keeps what arrives
faster than it is consumed, so the process grows with the size of the file it reads back. The
`sftp` program streams in C with its own bounded buffers, as the `scp` an operator would use.
So when the storage authenticates with a key (OpenSSH's batch mode cannot type a password)
and `DBOPS_BACKUP_REMOTE_SFTP_PROGRAM` names an installed client, the bulk transfers go
through it, with the same host-key rule: only a host the known-hosts file already knows.
"""

from __future__ import annotations

import shutil
import subprocess

from dbops import conf

# What paramiko can take but OpenSSH's batch mode cannot: then dbops' paramiko transfers.
PARAMIKO_ONLY_PARAMS = ("password", "pkey", "sock", "passphrase")
ALIVE_INTERVAL_SECONDS = 10
ALIVE_COUNT = 3


class TransferError(Exception):
    """OpenSSH's sftp failed; the message is its own last line of complaint."""


def client_for(storage, known_hosts) -> OpenSshClient | None:
    """An OpenSSH client for the storage's host, or None when paramiko must move the data."""
    program = conf.BACKUP_REMOTE_SFTP_PROGRAM
    params = storage.params or {}
    if not program or any(params.get(name) for name in PARAMIKO_ONLY_PARAMS):
        return None
    executable = shutil.which(program)
    if executable is None:
        if program == conf.SETTINGS["BACKUP_REMOTE_SFTP_PROGRAM"].default:
            return None  # OpenSSH's client is not installed: paramiko moves the bytes
        raise TransferError(
            f"DBOPS_BACKUP_REMOTE_SFTP_PROGRAM is {program!r}, which is not an executable "
            f"program (set it to OpenSSH's sftp, or empty for dbops' own transfers)"
        )
    return OpenSshClient(executable, storage, known_hosts)


class OpenSshClient:
    def __init__(self, executable: str, storage, known_hosts):
        params = storage.params or {}
        self.command = [
            executable,
            "-q",
            "-b",
            "-",
            "-F",
            "none",  # the storage's settings are the configuration, not ~/.ssh/config
            "-P",
            str(params.get("port") or 22),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            f"ConnectTimeout={conf.CONNECT_TIMEOUT}",
            "-o",
            f"ServerAliveInterval={ALIVE_INTERVAL_SECONDS}",
            "-o",
            f"ServerAliveCountMax={ALIVE_COUNT}",
        ]
        if params.get("username"):
            self.command += ["-o", f"User={params['username']}"]
        key_files = params.get("key_filename") or []
        for key_file in [key_files] if isinstance(key_files, str) else key_files:
            self.command += ["-i", str(key_file)]
        if params.get("look_for_keys") is False and key_files:
            self.command += ["-o", "IdentitiesOnly=yes"]
        if params.get("allow_agent") is False:
            self.command += ["-o", "IdentityAgent=none"]
        self.command.append(storage.host)

    def put(self, local, remote: str) -> None:
        self._run(f"put {_quoted(str(local))} {_quoted(remote)}")

    def get(self, remote: str, local) -> None:
        self._run(f"get {_quoted(remote)} {_quoted(str(local))}")

    def _run(self, batch: str) -> None:
        completed = subprocess.run(
            self.command, input=batch + "\n", capture_output=True, text=True, check=False
        )
        if completed.returncode != 0:
            lines = [line.strip() for line in completed.stderr.splitlines() if line.strip()]
            reason = lines[-1] if lines else f"exit status {completed.returncode}"
            raise TransferError(f"OpenSSH's sftp failed: {reason}")


def _quoted(path: str) -> str:
    """A path as sftp's batch language reads it: double quotes, with \\ and " escaped."""
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'
