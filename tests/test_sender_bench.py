"""The sender benchmark runs end to end in its quick mode (so it cannot rot unnoticed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def test_quick_sender_bench_writes_results():
    """bench/sender.py --quick keeps the total per interval and writes its file."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "sender.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((ROOT / "bench" / "results" / "sender-quick.json").read_text())
    assert [r["load"] for r in results["limiter"]] == [1.0, 2.0, 5.0]
    for run in results["limiter"]:
        assert run["bytesPerInterval"]["worstDeviationPercent"] <= 3.0
        assert run["highDelaySeconds"]["p99"] < 1.0
    assert [r["stalled"] for r in results["stalledReaders"]] == [1, 10, 50]
    assert all(r["framesDelivered"] > 0 for r in results["stalledReaders"])
    whole = results["wholeBridge"]  # real bridge and Notifier processes, limiter off and on
    (only,) = whole["rounds"]
    assert all(only[phase]["frames"] > 0 for phase in ("off", "atLimit", "underLimit"))
    assert whole["cpuMicrosecondsPerFrame"]["off"] > 0
