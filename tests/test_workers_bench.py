"""bench/workers.py runs end to end in its quick mode (so it cannot rot unnoticed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def test_quick_workers_bench_measures_both_and_holds_every_session() -> None:
    """--quick: logons and a rate delivered whole, 1 and 2 workers; held sessions counted once."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "workers.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((ROOT / "bench" / "results" / "workers-quick.json").read_text())
    for workers in ("1", "2"):
        (round_,) = results["rounds"][workers]
        assert round_["logons"]["logons"] > 0 and round_["logons"]["errors"] == 0
        deliveries = round_["deliveries"]
        assert deliveries["per_s"] > 0 and deliveries["kept"] >= results["params"]["keep"]
        # the bridge's own count and the bytes the clients read agree on a rate delivered whole
        assert 0.8 < deliveries["read_frames_over_sent"] < 1.25
    summary = results["summary"]
    assert summary["logons"]["ratio_per_s"] > 0 and summary["deliveries"]["ratio_per_s"] > 0
    assert all(summary[kind]["ratio_bound"] > 0 for kind in ("logons", "deliveries"))
    held = results["held"]
    assert held["held_by_clients"] == held["bridge_sessions"] == held["clients"]
    assert [w["sessions"] > 0 for w in held["per_worker"]] == [True, True]
