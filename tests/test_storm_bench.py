"""The logon-storm benchmark runs end to end in its quick mode (so it cannot rot unnoticed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def test_quick_storm_bench_brings_every_client_back_with_both_backlogs() -> None:
    """bench/storm.py --quick measures backlog 50 and 4096, every client back with 4096."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "storm.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((ROOT / "bench" / "results" / "storm-quick.json").read_text())
    cases = results["cases"]
    assert sorted(cases) == ["backlog-4096", "backlog-50"]
    full = cases["backlog-4096"]
    assert (full["back"], full["errors"]) == (full["clients"], 0)
    assert full["all_back_s"] > 0 and full["bridge_cpu_s"] >= 0
    small = cases["backlog-50"]  # a client whose last ACK the full queue dropped may be late
    assert small["back"] > 0 and small["back"] + small["errors"] == small["clients"]
