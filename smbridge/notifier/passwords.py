"""Salted password hashes for site files.

Site files hold only hashes, never clear passwords, so a leaked site file does not
leak logons. The format is self-describing so the work factor can rise later
without breaking old files::

    pbkdf2_sha256$<iterations>$<salt, base64>$<hash, base64>

Hash a password for a site file (reads one line from stdin, prints the hash)::

    echo -n 'secret' | python -m smbridge.notifier.passwords
    python -m smbridge.notifier.passwords --iterations 600000 < password.txt
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import sys

ALGORITHM = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 600_000  # OWASP 2023 guidance for PBKDF2-HMAC-SHA256
SALT_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(
    password: str, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> str:
    """Return the salted PBKDF2-SHA256 hash of ``password`` in the site-file format."""
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"{ALGORITHM}${iterations}${_b64(salt)}${_b64(digest)}"


def _parse(stored: str) -> tuple[int, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 4 or parts[0] != ALGORITHM:
        return None
    try:
        iterations = int(parts[1])
        salt = base64.b64decode(parts[2], validate=True)
        digest = base64.b64decode(parts[3], validate=True)
    except ValueError:
        return None
    if iterations < 1 or not digest:
        return None
    return iterations, salt, digest


def is_password_hash(stored: str) -> bool:
    """True when ``stored`` is a well-formed hash that :func:`verify_password` understands."""
    return _parse(stored) is not None


def verify_password(password: str, stored: str) -> bool:
    """Check ``password`` against a stored hash in constant time; malformed hashes never match."""
    parsed = _parse(stored)
    if parsed is None:
        return False
    iterations, salt, expected = parsed
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(digest, expected)


def main(argv: list[str] | None = None) -> int:
    """Read a password from stdin (first line, without its newline) and print its hash."""
    parser = argparse.ArgumentParser(
        prog="python -m smbridge.notifier.passwords",
        description="Hash a password for a smbridge site file (reads it from stdin).",
    )
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS)
    args = parser.parse_args(argv)
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        print("error: no password on stdin", file=sys.stderr)
        return 2
    print(hash_password(line, iterations=args.iterations))
    return 0


if __name__ == "__main__":
    sys.exit(main())
