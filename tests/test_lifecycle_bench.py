"""The lifecycle benchmark runs end to end in its quick mode (so it cannot rot unnoticed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def test_quick_lifecycle_bench_writes_results():
    """bench/lifecycle.py --quick measures lingering memory and resume latency and writes them."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "lifecycle.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((ROOT / "bench" / "results" / "lifecycle-quick.json").read_text())
    memory = results["lingeringMemory"]
    assert memory["sessions"] == memory["lingering"] == 1000
    assert 0 < memory["idleBytesPerSession"] < 64 * 1024
    assert memory["replayFramesPerSession"] == 20
    resume = results["resume"]
    for figure in ("resumeRoundTripMs", "reconnectAndResumeMs", "reconnectResumeAndReplay50Ms"):
        assert resume[figure]["samples"] == 20
        assert 0 < resume[figure]["p50"] <= resume[figure]["p99"]
    reference = resume["reconnectAndFreshLogonMs"]  # measured in the same run
    assert reference["samples"] == 10 and reference["p50"] > 0
    assert resume["resumeOverFreshLogonP50"] > 0
