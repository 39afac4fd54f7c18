"""The sizing and switchover benchmarks run end to end in their quick modes (so they cannot rot)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def run_quick(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_quick_sizing_bench_measures_the_bridge_against_the_minimal_router() -> None:
    """bench/sizing.py --quick: 200 sessions of the note's mix, every logon, both servers."""
    run_quick("sizing.py")
    (run,) = json.loads((ROOT / "bench" / "results" / "sizing-quick.json").read_text())["runs"]
    assert run["sessions"] == 200 and run["logon_errors"] == 0
    assert sum(run["mix"].values()) == 200
    for server in ("bridge", "minimal"):
        assert run[server]["errors"] == 0
        assert run[server]["deliveries_per_s"] > 0, run[server]
        assert run[server]["delay_samples"] > 0
    assert run["ratio_deliveries_per_cpu_s"] is None or run["ratio_deliveries_per_cpu_s"] > 0
    assert run["bridge_kb_per_idle_tls_session"] > 0


def test_quick_switchover_bench_brings_every_session_back() -> None:
    """bench/switchover.py --quick: 100 sessions all get events from the new primary."""
    run_quick("switchover.py")
    (run,) = json.loads((ROOT / "bench" / "results" / "switchover-quick.json").read_text())[
        "switchover"
    ]
    assert run["sessions_with_events_again"] == run["sessions"] == 100, run
    assert run["sessions_with_notice"] == 100, run
    assert run["events_again_max_s"] > 0
    assert run["events_again_max_s"] < run["target_s"], run
