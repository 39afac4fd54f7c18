"""The browser SDK's pure parts (codec, order, counters, request table) under Node's test runner."""

from __future__ import annotations

import subprocess

from smbridge.tunnel.testing import need_binary
from smbridge.webclient import ROOT


def test_node_unit_tests_of_the_browser_sdk_pass() -> None:
    """`node --test smbridge/webclient/tests/` runs every JS unit test and all of them pass."""
    node = need_binary("/usr/bin/node", "node")
    result = subprocess.run(
        [node, "--test", "--test-reporter=tap", str(ROOT / "tests")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout
    assert "# pass 0" not in result.stdout


def test_every_sdk_file_ships_in_the_package() -> None:
    """Each file the SDK and demo need exists and matches the package-data patterns."""
    import fnmatch
    import tomllib
    from pathlib import Path

    from smbridge.webclient import FILES

    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["smbridge.webclient"]
    assert sorted(p.name for p in ROOT.iterdir() if p.is_file() and p.suffix != ".py") == sorted(
        FILES
    )
    for name in FILES:
        assert any(fnmatch.fnmatch(name, p) for p in patterns), name
