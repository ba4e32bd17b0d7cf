"""`STORAGES["dbbackup_remote"]` from one URL, for projects that configure from the
environment: `sftp://user[:password]@host[:port]/absolute/path`.

Kept apart from dbops.sftp so that a settings module can use it without importing paramiko.
The password, when there is one, is masked everywhere (dbops.conf.remote_storage_secrets);
a key file is better.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

SFTP_STORAGE = "storages.backends.sftpstorage.SFTPStorage"


def sftp_storage(url: str, *, key_file: str = "", known_hosts: str = "") -> dict:
    """The STORAGES entry of django-storages' SFTPStorage for `url`; ValueError says what is
    wrong with it (never repeating the password)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("is not a URL of the form sftp://user@host:port/path") from None
    if parts.scheme != "sftp":
        raise ValueError(f"must start with sftp:// (got {parts.scheme or 'no'} scheme)")
    if not parts.hostname or not parts.username:
        raise ValueError("needs a user and a host: sftp://user@host:port/path")
    if not parts.path.startswith("/") or parts.path == "/":
        raise ValueError("needs an absolute folder after the host: sftp://user@host/srv/backups")
    params: dict = {"port": port or 22, "username": unquote(parts.username)}
    if parts.password:
        params["password"] = unquote(parts.password)
    if key_file:
        # Only the key given: not whatever ~/.ssh or an agent holds.
        params.update(key_filename=key_file, look_for_keys=False, allow_agent=False)
    return {
        "BACKEND": SFTP_STORAGE,
        "OPTIONS": {
            "host": parts.hostname,
            "params": params,
            "root_path": unquote(parts.path),
            "known_host_file": known_hosts or None,
            "file_mode": 0o600,
            "dir_mode": 0o700,
        },
    }
