"""The benchmark runs end to end in its quick mode (so it cannot rot unnoticed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def test_quick_bench_writes_results():
    """bench/run.py --quick measures both benchmarks with no errors and writes its file."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((ROOT / "bench" / "results" / "quick.json").read_text())
    rt, fan = results["roundtrip"], results["fanout"]
    assert rt["through_bridge_rate"] > 0 and rt["direct_rate"] > 0
    assert all(r["errors"] == 0 for r in rt["through_bridge"] + rt["direct"])
    assert fan["through_bridge_rate"] > 0 and fan["minimal_server_rate"] > 0
    assert fan["through_bridge"]["captured_frames"] > 0
