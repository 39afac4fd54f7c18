"""bench/fanout_paths.py (the fan-out's send path in one process, two trees) runs, quick."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_fanout_paths_measures_both_shapes_against_another_tree(tmp_path: Path) -> None:
    """Tiny sizes, this tree against itself: a figure per shape and tree, every round."""
    out = tmp_path / "paths.json"
    args = ["--watchers", "5", "--events", "3", "--reads", "10", "--rounds", "1"]
    cmd = [sys.executable, str(ROOT / "bench" / "fanout_paths.py"), *args]
    done = subprocess.run(
        [*cmd, "--old", str(ROOT), "--out", str(out)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())
    for shape in ("reading", "paused"):
        rounds = results["us_per_delivery"][shape]["rounds"]
        assert set(rounds) == {"new", "old"}
        assert all(len(r) == 1 and 0 < r[0] < 1000 for r in rounds.values())
