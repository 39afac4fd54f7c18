"""The linters as tests: ruff (lint and format) and mypy strict pass over the repository."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if proc.returncode != 0:
        print(proc.stdout)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}"


def test_ruff() -> None:
    """Ruff finds no lint errors and no file that needs reformatting."""
    _run("ruff", "check", ".")
    _run("ruff", "format", "--check", ".")


def test_mypy() -> None:
    """Mypy, strict with the mypy-zope plugin as configured in pyproject.toml, finds no errors."""
    _run("mypy")
