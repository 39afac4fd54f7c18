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
    """bench/run.py --quick measures each figure beside its strong reference, per CPU second."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((ROOT / "bench" / "results" / "quick.json").read_text())
    rt, fan, hb = results["roundtrip"], results["fanout"], results["heartbeat"]
    assert rt["through_bridge_rate"] > 0 and rt["direct_rate"] > 0
    assert all(r["errors"] == 0 for r in rt["through_bridge"] + rt["direct"])
    assert fan["reference"] == "minimal_server" and hb["reference"] == "bare_responder"
    assert fan["through_bridge_rate"] > 0 and fan["minimal_server_rate"] > 0
    assert hb["through_bridge_rate"] > 0 and hb["bare_responder_rate"] > 0
    assert all(r["errors"] == 0 for r in hb["through_bridge"] + hb["bare_responder"])
    # The same stream reaches the bridge's clients and the reference's: same frame sizes.
    (bridge_round,), (ref_round,) = fan["through_bridge"], fan["minimal_server"]
    assert abs(bridge_round["frame_bytes"] - ref_round["frame_bytes"]) < 20
    for figure in (fan, hb):  # per CPU second of each server, or None if its clock read 0
        assert figure["ratio_per_cpu_s"] is None or figure["ratio_per_cpu_s"] > 0
