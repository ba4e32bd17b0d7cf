"""SFTP for off-site backups: only to a host the known-hosts file already knows, and never a
partial file under a backup's name.

django-storages' SFTPStorage is the configuration (its `host`, `params`, `root_path`,
`known_host_file`, `file_mode`, `dir_mode`), but dbops opens the paramiko session itself,
because the storage accepts an unknown host key silently (`AutoAddPolicy`: the first
man-in-the-middle gets every backup) and writes with `putfo` straight to the final name (a
dropped connection leaves a truncated file that looks like a backup). Here an unknown or
changed host key is refused, and a file is written under a hidden temporary name, read back
(size and sha256), and only then renamed to its final name. The bytes themselves go through
OpenSSH's `sftp` client when the storage authenticates with a key (dbops.openssh: faster, and
memory flat whatever the backup's size); otherwise through this session, in bounded chunks.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import secrets
import stat
import string
import time
from pathlib import Path

from dbops import conf, openssh
from dbops.files import file_sha256

CHUNK = 1 << 20
# A download asks for one window at a time, up to 64 reads of 32 KiB in flight: fast on a
# distant server, and never more than a window in memory (paramiko's own getfo prefetches the
# whole file, keeping what arrives faster than it is written).
WINDOW = 8 << 20
PREFETCH_REQUESTS = 64
# No digits, as for local partial files: nothing that lists backups by date picks it up.
PARTIAL_PREFIX = ".dbops-partial-"
# A temporary file this old was left by an upload whose connection died (no upload of a
# backup takes a day): the next upload deletes it.
STALE_PARTIAL_SECONDS = 24 * 3600
DEFAULT_FILE_MODE = 0o600
DEFAULT_DIR_MODE = 0o700


class RemoteError(Exception):
    """What went wrong with the remote, in one line that names it (never a password)."""


def is_sftp_storage(storage) -> bool:
    try:
        from storages.backends.sftpstorage import SFTPStorage
    except ImportError:  # django-storages (or paramiko) is not installed: not SFTP then
        return False
    return isinstance(storage, SFTPStorage)


def known_hosts_file(storage) -> Path:
    """The known-hosts file the storage names, else ~/.ssh/known_hosts (as SFTPStorage)."""
    return Path(storage.known_host_file or Path("~/.ssh/known_hosts").expanduser())


def location(storage) -> str:
    """`sftp://user@host:port/root` for messages: never the password."""
    params = storage.params or {}
    user = f"{params['username']}@" if params.get("username") else ""
    root = (storage.root_path or "").lstrip("/")
    return f"sftp://{user}{storage.host}:{params.get('port') or 22}/{root}"


class _RefuseUnknownHost:
    """paramiko's missing-host-key policy: refuse, naming the key offered so the operator can
    compare it with the server's own (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`)."""

    def __init__(self, known_hosts: Path):
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key):
        raise RemoteError(
            f"the SFTP host {hostname} is not in the known-hosts file {self.known_hosts}: "
            f"refused (it offered {key.get_name()} key {key.fingerprint}); after checking "
            f"that fingerprint with the server's administrator, add it: ssh-keyscan "
            f"{_keyscan_target(hostname)} >> {self.known_hosts}"
        )


def _keyscan_target(hostname: str) -> str:
    if hostname.startswith("["):  # "[host]:port", as known-hosts files write other ports
        host, _, port = hostname[1:].partition("]:")
        return f"-p {port} {host}"
    return hostname


@contextlib.contextmanager
def session(storage):
    """An SFTP session to the storage's host, refused unless its key is already known."""
    import paramiko

    known_hosts = known_hosts_file(storage)
    if not known_hosts.is_file():
        raise RemoteError(
            f"the known-hosts file {known_hosts} does not exist: dbops connects only to an "
            f"SFTP host whose key it knows (set the storage's known_host_file)"
        )
    client = paramiko.SSHClient()
    try:
        client.load_host_keys(str(known_hosts))
        client.set_missing_host_key_policy(_RefuseUnknownHost(known_hosts))
        timeout = conf.CONNECT_TIMEOUT
        params = {"timeout": timeout, "banner_timeout": timeout, "auth_timeout": timeout}
        params.update(storage.params or {})
        try:
            client.connect(storage.host, **params)
        except paramiko.BadHostKeyException:
            raise RemoteError(
                f"the SFTP host {storage.host} offered a key that differs from the one in "
                f"{known_hosts}: refused (the server's key changed, or this is not the server)"
            ) from None
        yield RemoteDirectory(client.open_sftp(), storage, openssh.client_for(storage, known_hosts))
    finally:
        client.close()


class RemoteDirectory:
    """The storage's root folder on an open SFTP session."""

    def __init__(self, sftp, storage, openssh_client=None):
        self.sftp = sftp
        self.openssh = openssh_client
        self.root = storage.root_path or ""
        self.file_mode = storage.file_mode if storage.file_mode is not None else DEFAULT_FILE_MODE
        self.dir_mode = storage.dir_mode if storage.dir_mode is not None else DEFAULT_DIR_MODE

    def path(self, name: str) -> str:
        return posixpath.join(self.root, name)

    def upload(self, source: Path, name: str, *, size: int, sha256: str) -> None:
        """Copy `source` to `name`, whole and checked, or not at all; an existing `name` is
        never replaced. The temporary file goes on any failure the session survives; one
        left by a connection cut mid-way goes with the first upload a day later."""
        final = self.path(name)
        self._make_directories(posixpath.dirname(final))
        self._delete_stale_partials(posixpath.dirname(final))
        if self._exists(final):
            raise RemoteError(f"{name} already exists on the remote: not replaced")
        partial = posixpath.join(posixpath.dirname(final), _partial_name())
        try:
            self._send(source, partial)
            copied_size, copied_sha256 = self._read_back(partial, source.parent)
            if (copied_size, copied_sha256) != (size, sha256):
                raise RemoteError(
                    f"the copy read back from the remote differs ({copied_size:,} bytes, "
                    f"sha256 {copied_sha256[:12]}…; sent {size:,} bytes, {sha256[:12]}…)"
                )
            # SFTP's rename (not posix-rename) never replaces an existing file.
            self.sftp.rename(partial, final)
        except BaseException:
            with contextlib.suppress(Exception):
                self.sftp.remove(partial)
            raise

    def _send(self, source: Path, partial: str) -> None:
        if self.openssh is not None:
            self.sftp.open(partial, "xb").close()  # created private, before any byte is sent
            self.sftp.chmod(partial, self.file_mode)
            self.openssh.put(source, partial)
            return
        with self.sftp.open(partial, "wb") as remote, source.open("rb") as local:
            remote.chmod(self.file_mode)
            remote.set_pipelined(True)
            while chunk := local.read(CHUNK):
                remote.write(chunk)

    def _read_back(self, path: str, scratch: Path) -> tuple[int, str]:
        """Size and sha256 of a remote file, read back in full (OpenSSH's client writes it
        into a private file in `scratch`, removed afterwards)."""
        if self.openssh is None:
            return self._read(path, _Digest())
        copy = scratch / _partial_name()
        try:
            return self._fetch(path, copy)
        finally:
            copy.unlink(missing_ok=True)

    def download(self, name: str, destination: Path) -> tuple[int, str]:
        """The remote file `name` as a new local file `destination`; its size and sha256."""
        return self._fetch(self.path(name), Path(destination))

    def _fetch(self, path: str, destination: Path) -> tuple[int, str]:
        if self.openssh is None:
            with destination.open("xb") as handle:
                return self._read(path, _Digest(handle))
        destination.touch(mode=0o600, exist_ok=False)  # OpenSSH's get keeps it private
        self.openssh.get(path, destination)
        return destination.stat().st_size, file_sha256(destination)

    def _read(self, path: str, sink: _Digest) -> tuple[int, str]:
        with self.sftp.open(path, "rb") as remote:
            size = remote.stat().st_size
            for start in range(0, size, WINDOW):
                end = min(start + WINDOW, size)
                requests = [
                    (offset, min(32768, end - offset)) for offset in range(start, end, 32768)
                ]
                for data in remote.readv(requests, PREFETCH_REQUESTS):
                    sink.write(data)
            remote.seek(size)
            while tail := remote.read(CHUNK):  # the file grew while it was read
                sink.write(tail)
        return sink.size, sink.hexdigest()

    def delete(self, name: str) -> None:
        self.sftp.remove(self.path(name))

    def exists(self, name: str) -> bool:
        return self._exists(self.path(name))

    def _exists(self, path: str) -> bool:
        try:
            self.sftp.stat(path)
        except FileNotFoundError:
            return False
        return True

    def _delete_stale_partials(self, directory: str) -> None:
        cutoff = time.time() - STALE_PARTIAL_SECONDS
        for entry in self.sftp.listdir_attr(directory or "."):
            if entry.filename.startswith(PARTIAL_PREFIX) and (entry.st_mtime or 0) < cutoff:
                with contextlib.suppress(OSError):
                    self.sftp.remove(posixpath.join(directory, entry.filename))

    def _make_directories(self, directory: str) -> None:
        if directory in ("", "/", ".") or self._is_directory(directory):
            return
        self._make_directories(posixpath.dirname(directory))
        self.sftp.mkdir(directory, self.dir_mode)

    def _is_directory(self, path: str) -> bool:
        try:
            mode = self.sftp.stat(path).st_mode
        except FileNotFoundError:
            return False
        if mode is not None and not stat.S_ISDIR(mode):
            raise RemoteError(f"{path} on the remote is not a directory")
        return True


class _Digest:
    """A write-only file that hashes what it is given (and passes it on, if given a file)."""

    def __init__(self, handle=None):
        self.handle = handle
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        if self.handle is not None:
            self.handle.write(data)
        return len(data)

    def hexdigest(self) -> str:
        return self.hash.hexdigest()


def _partial_name() -> str:
    return PARTIAL_PREFIX + "".join(secrets.choice(string.ascii_lowercase) for _ in range(16))
