"""bench/tunnel.py runs end to end in its quick mode (so it cannot rot unnoticed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def test_quick_tunnel_bench_writes_results() -> None:
    """Every path (TLS, clear, ws, wss, websockify, no NVX) is measured without errors."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "tunnel.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((ROOT / "bench" / "results" / "tunnel-quick.json").read_text())
    summary = results["summary"]
    assert set(summary) == {
        "tls",
        "tcp",
        "ws",
        "wss",
        "websockify",
        "ws-no-nvx",
        "ws-large",
        "ws-large-no-nvx",
    }
    for path, row in summary.items():
        assert row["rate"] > 0 and row["errors"] == 0, path
        assert row["p99_ms"] >= row["p50_ms"] > 0, path
        assert all(cpu >= 0 for cpu in row["cpu"].values()), path
    assert set(summary["websockify"]["cpu"]) == {"bridge", "websockify"}
    assert results["autobahn_uses_nvx"] is True
    assert set(results["ratios"]) >= {"wss_vs_tls", "wss_vs_websockify", "nvx_speedup_ws"}
