"""A real OpenSSH server for the off-site backup tests.

Debian's sshd (scripts/install-test-packages.sh installs it) started as `sshd -D` on a free
127.0.0.1 port, as the current user, with a throwaway host key, client key, authorized_keys
and known_hosts file, and SFTP served by internal-sftp. Everything lives in one temporary
folder, removed with the server.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import selectors
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.processes import terminate
from tests.tcp_proxy import TcpProxy

SSHD = "/usr/sbin/sshd"
SFTP_STORAGE = "storages.backends.sftpstorage.SFTPStorage"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        capture_output=True,
    )


@dataclass
class SshServer:
    folder: Path
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    host_public_key: str
    sftp_subsystem: str = "internal-sftp"
    process: subprocess.Popen | None = None

    def storage(self, root: Path | str, **options) -> dict:
        """A STORAGES entry for django-storages' SFTPStorage on this server."""
        params = {
            "port": self.port,
            "username": self.user,
            "key_filename": str(self.client_key),
            "look_for_keys": False,
            "allow_agent": False,
        }
        params.update(options.pop("params", {}))
        return {
            "BACKEND": SFTP_STORAGE,
            "OPTIONS": {
                "host": "127.0.0.1",
                "params": params,
                "root_path": str(root),
                "known_host_file": str(self.known_hosts),
                **options,
            },
        }

    def start(self) -> None:
        config = self.folder / "sshd_config"
        config.write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {self.folder / 'host_key'}\n"
            f"PidFile {self.folder / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.folder / 'authorized_keys'}\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            "UsePAM no\n"
            "StrictModes no\n"
            f"Subsystem sftp {self.sftp_subsystem}\n"
            "LogLevel ERROR\n"
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation
        checked = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
        assert checked.returncode == 0, f"sshd refuses its test configuration: {checked.stderr}"
        self.process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=(self.folder / "sshd.log").open("wb"),
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.folder / "sshd.log").read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.05)
        raise AssertionError(f"sshd did not listen on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        terminate(self.process)


@contextlib.contextmanager
def running_sshd(sftp_subsystem: str = "internal-sftp"):
    """A started SshServer, stopped and removed afterwards; `sftp_subsystem` is the command
    sshd serves SFTP with (tests/damaging_sftp_server.py: one that damages what it stores)."""
    assert Path(SSHD).is_file(), f"{SSHD} is missing: run scripts/install-test-packages.sh"
    folder = Path(tempfile.mkdtemp(prefix="caloria-test-sshd-"))
    server = None
    try:
        keygen(folder / "host_key")
        keygen(folder / "client_key")
        shutil.copyfile(folder / "client_key.pub", folder / "authorized_keys")
        port = free_port()
        host_public_key = " ".join((folder / "host_key.pub").read_text().split()[:2])
        known_hosts = folder / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {host_public_key}\n")
        server = SshServer(
            folder=folder,
            port=port,
            user=getpass.getuser(),
            client_key=folder / "client_key",
            known_hosts=known_hosts,
            host_public_key=host_public_key,
            sftp_subsystem=sftp_subsystem,
        )
        server.start()
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


class CutAfterBytes(TcpProxy):
    """A proxy that forwards until `limit` bytes went to the server, then drops both ends,
    as a network failing in the middle of an upload does."""

    def __init__(self, target_host: str, target_port: int, limit: int):
        self.limit = limit
        self.sent = 0
        super().__init__(target_host, target_port)

    def _pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        try:
            while True:
                for key, _ in selector.select(timeout=0.5):
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    if key.data is upstream:
                        self.sent += len(data)
                        if self.sent > self.limit:
                            return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            selector.close()
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()
