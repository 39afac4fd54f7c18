"""Password hashes: format, verification, and the hashing command line."""

from __future__ import annotations

import io

import pytest

from smbridge.notifier.passwords import hash_password, is_password_hash, main, verify_password


def test_hash_format_and_round_trip() -> None:
    """A hash names its algorithm and iterations and verifies the password it was made from."""
    stored = hash_password("s3cret", iterations=1000)
    algorithm, iterations, salt, digest = stored.split("$")
    assert (algorithm, iterations) == ("pbkdf2_sha256", "1000")
    assert salt and digest
    assert verify_password("s3cret", stored) is True
    assert verify_password("S3cret", stored) is False


def test_salts_differ() -> None:
    """Two hashes of one password differ (random salt) yet both verify."""
    a, b = hash_password("pw", iterations=1000), hash_password("pw", iterations=1000)
    assert a != b
    assert verify_password("pw", a) and verify_password("pw", b)


def test_fixed_salt_is_deterministic() -> None:
    """A given salt gives a reproducible hash (documented examples rely on it)."""
    assert hash_password("pw", 1000, b"x" * 16) == hash_password("pw", 1000, b"x" * 16)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain",
        "md5$1$AA==$AA==",
        "pbkdf2_sha256$x$AA==$AA==",
        "pbkdf2_sha256$0$AA==$AA==",
        "pbkdf2_sha256$10$not base64!$AA==",
        "pbkdf2_sha256$10$AA==$",
    ],
)
def test_malformed_hashes_never_match(stored: str) -> None:
    """Malformed stored values are not hashes and verify nothing."""
    assert is_password_hash(stored) is False
    assert verify_password("", stored) is False


def test_cli_reads_stdin_and_prints_hash(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI hashes the first stdin line (without its newline) with the given iterations."""
    monkeypatch.setattr("sys.stdin", io.StringIO("hunter2\n"))
    assert main(["--iterations", "1000"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("pbkdf2_sha256$1000$")
    assert verify_password("hunter2", printed)


def test_cli_refuses_empty_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty stdin is an error (exit status 2), not the hash of an empty password."""
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main([]) == 2
    assert "no password" in capsys.readouterr().err
