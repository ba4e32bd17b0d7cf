"""Backups encrypted to a public key, so that a stolen copy (off-site, or the disk) is useless
and the server that makes them holds nothing that could read them.

GnuPG through python-gnupg, the library django-dbbackup encrypts with. Unlike dbbackup's own
`--encrypt` (a recipient looked up in the server user's keyring), the key is a file the
project names (`DBOPS_BACKUP_GPG_PUBLIC_KEY`), imported for each use into a throwaway
GNUPGHOME that is removed afterwards: no keyring to keep on the server, nothing to trust
but that file, and a private key given to decrypt (`verify_backup --private-key`,
`restore_backup`) never stays behind. A key file holding a private key is refused outright.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dbops import conf

SUFFIX = ".gpg"

# python-gnupg logs each failing gpg run as a warning of its own; dbops' one-line message
# already carries gpg's reason, and cron must get one line, not two.
logging.getLogger("gnupg").setLevel(logging.ERROR)


class EncryptionError(Exception):
    """Why a key cannot be used or a file cannot be encrypted or decrypted, in one line."""


@dataclass(frozen=True)
class PublicKey:
    path: Path
    fingerprint: str


@contextlib.contextmanager
def throwaway_keyring():
    """A python-gnupg GPG on a GNUPGHOME of its own, removed with its agent afterwards."""
    import gnupg

    home = tempfile.mkdtemp(prefix="dbops-gnupg-")
    try:
        try:
            gpg = gnupg.GPG(gnupghome=home)
        except (OSError, ValueError) as exc:
            reason = f"gpg cannot run ({exc}): install GnuPG (Debian: gnupg)"
            raise EncryptionError(reason) from None
        yield gpg
    finally:
        # Importing a private key starts a gpg-agent for this home: end it before removing.
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                ["gpgconf", "--homedir", home, "--kill", "all"],
                capture_output=True,
                timeout=10,
                check=False,
            )
        shutil.rmtree(home, ignore_errors=True)


def configured_public_key() -> PublicKey:
    """The key `DBOPS_BACKUP_GPG_PUBLIC_KEY` names, checked (see `load_public_key`)."""
    if not conf.BACKUP_GPG_PUBLIC_KEY:
        raise EncryptionError(
            "encryption needs a public key: set DBOPS_BACKUP_GPG_PUBLIC_KEY to an armored "
            "GPG public key file (gpg --armor --export KEYID > FILE)"
        )
    path = Path(conf.BACKUP_GPG_PUBLIC_KEY)
    with throwaway_keyring() as gpg:
        return _import_public_key(gpg, path)


def _import_public_key(gpg, path: Path) -> PublicKey:
    """Import the one public key of `path`; refuse a missing file, a file of no key or of
    several, a private key (the server must not hold one), and a key that cannot encrypt."""
    where = f"DBOPS_BACKUP_GPG_PUBLIC_KEY ({path})"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EncryptionError(f"{where} cannot be read: {exc.strerror or exc}") from None
    if b"PRIVATE KEY BLOCK" in data:
        raise EncryptionError(f"{where} holds a private key: give the public key only")
    result = gpg.import_keys(data)
    if gpg.list_keys(secret=True):
        raise EncryptionError(f"{where} holds a private key: give the public key only")
    keys = gpg.list_keys()
    if len(keys) != 1:
        count = "no" if not keys else len(keys)
        raise EncryptionError(f"{where} holds {count} public keys (GPG says: {_said(result)})")
    key = keys[0]
    if "E" not in key.get("cap", "") or key.get("trust") in ("e", "r"):
        raise EncryptionError(
            f"{where}: key {key['fingerprint']} cannot encrypt (expired, revoked, or no "
            f"encryption subkey)"
        )
    return PublicKey(path=path, fingerprint=key["fingerprint"])


def encrypt(source, output: Path, key: PublicKey) -> None:
    """Encrypt `source` (a path or a binary file) to `output`, streaming through gpg."""
    with throwaway_keyring() as gpg:
        imported = _import_public_key(gpg, key.path)
        if imported.fingerprint != key.fingerprint:
            raise EncryptionError(f"{key.path} changed while the backup ran: not encrypted")
        handle = source.open("rb") if isinstance(source, Path) else source
        try:
            result = gpg.encrypt_file(
                handle,
                recipients=[key.fingerprint],
                armor=False,
                always_trust=True,  # the operator chose this file; nothing else is trusted
                output=str(output),
            )
        finally:
            if handle is not source:
                handle.close()
    if not result.ok or result.returncode:
        raise EncryptionError(f"gpg could not encrypt: {_said(result)}")


def decrypt(
    source: Path,
    output: Path,
    *,
    private_key: Path,
    expected_fingerprint: str,
    passphrase: str | None = None,
) -> None:
    """Decrypt `source` into `output` with the armored private key file `private_key` (and
    its passphrase, given to gpg on a pipe, never on a command line).

    Refuses a key that is not the one the backup was encrypted to before decrypting; gpg
    itself refuses a truncated or altered file (its integrity check). On any failure
    `output` is removed: a partial plain file is never left to restore from.
    """
    where = f"the private key file {private_key}"
    try:
        data = private_key.read_bytes()
    except OSError as exc:
        raise EncryptionError(f"{where} cannot be read: {exc.strerror or exc}") from None
    with throwaway_keyring() as gpg:
        result = gpg.import_keys(data)
        secret_keys = gpg.list_keys(secret=True)
        if not secret_keys:
            raise EncryptionError(
                f"{where} holds no private key (GPG says: {_said(result)}); export it with "
                f"gpg --armor --export-secret-keys KEYID"
            )
        held = {key["fingerprint"] for key in secret_keys}
        held |= {
            info.get("fingerprint")
            for key in secret_keys
            for info in key.get("subkey_info", {}).values()
        } - {None}
        if expected_fingerprint and expected_fingerprint not in held:
            raise EncryptionError(
                f"{where} is not the key this backup was encrypted to "
                f"({expected_fingerprint}); it holds {', '.join(sorted(held))}"
            )
        try:
            try:
                result = gpg.decrypt_file(
                    str(source), always_trust=True, output=str(output), passphrase=passphrase
                )
            except ValueError:  # python-gnupg refuses a passphrase holding a line break
                raise EncryptionError("the passphrase holds a line break") from None
            if not result.ok or result.returncode:
                raise EncryptionError(
                    f"gpg could not decrypt it: {_said(result)} (a truncated or altered "
                    f"file, or a key whose passphrase is missing or wrong)"
                )
        except BaseException:
            output.unlink(missing_ok=True)
            raise


def _said(result) -> str:
    """gpg's own status, in one line: its last error, else its status word."""
    lines = [line for line in (getattr(result, "stderr", "") or "").splitlines() if line]
    errors = [line[len("gpg: ") :] for line in lines if line.startswith("gpg: ")]
    reason = errors[-1] if errors else ""
    status = getattr(result, "status", "") or ""
    return "; ".join(part for part in (status, reason) if part) or "no detail"


def private_copy_directory(parent: Path) -> Path:
    """A new private (0700) folder in `parent` for files that must not be seen: the plain
    dump kept for verification, gpg's output before it takes its final name."""
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".dbops-work-", dir=parent))
