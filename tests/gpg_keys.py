"""GPG key pairs made at test time (ed25519 signing, cv25519 encryption: fast), exported as
the armored files an operator would keep: the public key on the server, the private key
elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

PASSPHRASE = "correct horse battery staple, never shown"


@dataclass(frozen=True)
class KeyPair:
    fingerprint: str
    public_key: Path
    private_key: Path


def make_key_pair(folder: Path, name: str, passphrase: str = "") -> KeyPair:
    home = tempfile.mkdtemp(prefix="caloria-test-gnupg-")
    environment = {**os.environ, "GNUPGHOME": home}

    def gpg(*args: str) -> str:
        completed = subprocess.run(
            ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", passphrase, *args],
            env=environment,
            capture_output=True,
            text=True,
            check=True,
        )
        return completed.stdout

    try:
        gpg("--quick-gen-key", f"{name} <{name}@example.test>", "future-default", "default", "0")
        listing = gpg("--list-keys", "--with-colons")
        fingerprint = next(
            line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
        )
        public_key = folder / f"{name}-public.asc"
        private_key = folder / f"{name}-private.asc"
        public_key.write_text(gpg("--armor", "--export", fingerprint))
        private_key.write_text(gpg("--armor", "--export-secret-keys", fingerprint))
        private_key.chmod(0o600)
        return KeyPair(fingerprint, public_key, private_key)
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=environment, check=False)
        shutil.rmtree(home, ignore_errors=True)
