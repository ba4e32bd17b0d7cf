"""Passwords of users imported from the Flask app keep working.

The Flask app stored werkzeug hashes (`scrypt:N:r:p$salt$hex`, `pbkdf2:sha256:N$salt$hex`);
`import_sqlite --mapping flask-caloria` stores them as `werkzeug$<werkzeug hash>`. This hasher
only verifies them. It is listed after Django's default, so a successful login re-hashes the
password with the default hasher and the werkzeug hash is gone.
"""

import hashlib
import hmac

from django.contrib.auth.hashers import BasePasswordHasher, mask_hash
from django.utils.crypto import constant_time_compare

ALGORITHM = "werkzeug"
SCRYPT_MAX_MEMORY = 256 * 1024 * 1024


class WerkzeugPasswordHasher(BasePasswordHasher):
    algorithm = ALGORITHM

    def encode(self, password, salt):
        raise NotImplementedError("werkzeug hashes are verified, never created")

    def decode(self, encoded):
        algorithm, method, salt, digest = encoded.split("$", 3)
        assert algorithm == self.algorithm
        return {"algorithm": algorithm, "method": method, "salt": salt, "hash": digest}

    def verify(self, password, encoded):
        try:
            decoded = self.decode(encoded)
            expected = werkzeug_digest(decoded["method"], password, decoded["salt"])
        except (ValueError, AssertionError):
            return False
        return expected is not None and constant_time_compare(expected, decoded["hash"])

    def safe_summary(self, encoded):
        decoded = self.decode(encoded)
        return {
            "algorithm": decoded["algorithm"],
            "method": decoded["method"],
            "salt": mask_hash(decoded["salt"]),
            "hash": mask_hash(decoded["hash"]),
        }

    def must_update(self, encoded):
        return True

    def harden_runtime(self, password, encoded):
        pass


def werkzeug_digest(method: str, password: str, salt: str) -> str | None:
    """The hex digest werkzeug's generate_password_hash would store, or None if unknown."""
    secret, salt_bytes = password.encode(), salt.encode()
    kind, *params = method.split(":")
    if kind == "scrypt":
        n, r, p = (int(value) for value in params) if params else (32768, 8, 1)
        return hashlib.scrypt(
            secret, salt=salt_bytes, n=n, r=r, p=p, maxmem=SCRYPT_MAX_MEMORY, dklen=64
        ).hex()
    if kind == "pbkdf2":
        name = params[0] if params else "sha256"
        iterations = int(params[1]) if len(params) > 1 else 600000
        return hashlib.pbkdf2_hmac(name, secret, salt_bytes, iterations).hex()
    if kind in hashlib.algorithms_available:  # werkzeug's old plain "sha256$salt$hmac"
        return hmac.new(salt_bytes, secret, kind).hexdigest()
    return None
