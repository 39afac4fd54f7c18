"""The timer benchmark runs end to end in its quick mode (so it cannot rot unnoticed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def test_quick_timer_bench_writes_results():
    """bench/timers.py --quick measures the queue and the naive reference and writes both."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "timers.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((ROOT / "bench" / "results" / "timers-quick.json").read_text())
    assert results["quick"] is True and results["timers"] == 2000
    for name in ("queue", "naive"):
        assert all(results["micro"][name][f] > 0 for f in ("armNs", "touchNs", "cancelNs"))
    assert all(ratio > 0 for ratio in results["ratios"].values())
    run = results["run"]
    assert run["sameEventsAsNaive"] is True and run["eventsFired"] > 0 and run["touches"] > 0
    assert run["queueSeconds"] > 0 and run["naiveSeconds"] > 0 and run["queueOverNaive"] > 0
