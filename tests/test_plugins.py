"""Packaging: twistd finds both plugins, and importing them stays cheap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TWISTD = str(Path(sys.executable).parent / "twistd")


def test_twistd_lists_both_plugins(tmp_path: Path) -> None:
    """`twistd --help`, run outside the checkout, lists the smbridge and notifier commands."""
    out = subprocess.run(
        [TWISTD, "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=60
    ).stdout
    commands = {line.split()[0] for line in out.splitlines() if line.startswith("    ")}
    assert {"smbridge", "notifier"} <= commands


def test_plugin_import_does_not_import_the_reactor_or_the_bridge() -> None:
    """Loading the plugin module imports neither the reactor nor the bridge's heavy parts."""
    code = (
        "import sys, importlib\n"
        "importlib.import_module('twisted.plugins.smbridge_plugins')\n"
        "heavy = [m for m in ('twisted.internet.reactor', 'smbridge.service', "
        "'smbridge.notifier.service') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
