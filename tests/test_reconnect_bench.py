"""bench/reconnect.py runs end to end in its quick mode (so it cannot rot unnoticed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def test_quick_reconnect_bench_writes_results() -> None:
    """Every case (the logon floor too) reconnects without errors; resumed cases really resume."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "reconnect.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((ROOT / "bench" / "results" / "reconnect-quick.json").read_text())
    summary = results["summary"]
    cases = ("logon", "logon-resumed", "resume", "resume-resumed")
    expected = {f"{t}/{case}" for t in ("tls", "wss") for case in cases}
    references = {"reference/handshake", "reference/handshake-resumed", "floor/logon"}
    assert set(summary) == expected | references
    for key, row in summary.items():
        assert row["errors"] == 0 and row["reconnects"] > 0, (key, row["error_samples"])
        resumed = (
            row["resumed"] == row["reconnects"] if key.endswith("-resumed") else not row["resumed"]
        )
        assert resumed, (key, row["resumed"])
        assert row["cpu"] >= 0, key
    ratios = results["ratios"]
    assert {"wss_vs_tls_logon", "wss_vs_tls_logon_resumed", "tls_logon_resumption_gain"} <= set(
        ratios
    )
    # The floor logged on through the same Notifier (its answers are not errors).
    assert ratios["logon_floor_vs_raw_handshake"] and ratios["tls_logon_vs_logon_floor"]
