"""`make bench` runs every benchmark in full, and each one also runs quick inside the tests."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Not benchmarks of their own: the references the benchmarks start, the fuzzer
# (`make fuzz`, tests/test_codec_fuzz.py) and the fan-out and logon A/B tools (two
# trees; fanout_paths runs quick in tests/test_replay_runs_bench.py).
NOT_BENCHES = {"fuzz", "fanout_ab", "fanout_paths", "logon_ab"}


def make_benches() -> list[str]:
    match = re.search(r"^BENCHES := (.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert match, "the Makefile names its benchmarks in BENCHES"
    return match.group(1).split()


def scripts() -> set[str]:
    """bench/*.py that run on their own (a __main__ block), references aside."""
    return {
        path.stem
        for path in (ROOT / "bench").glob("*.py")
        if '__name__ == "__main__"' in path.read_text()
        and not path.stem.startswith("minimal_")
        and path.stem not in NOT_BENCHES
    }


def test_make_bench_runs_every_benchmark_script() -> None:
    assert sorted(make_benches()) == sorted(scripts())


def test_make_bench_runs_each_script_in_full() -> None:
    """`make -n bench` runs bench/<name>.py for each, without --quick."""
    done = subprocess.run(["make", "-n", "bench"], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"}, check=True)  # fmt: skip
    assert "--quick" not in done.stdout
    assert "bench/$b.py" in done.stdout.replace("$$b", "$b")
    assert all(name in done.stdout for name in make_benches())


def test_every_benchmark_runs_quick_inside_the_tests() -> None:
    """For each benchmark a test runs it with --quick (so it cannot rot unnoticed)."""
    tests = [path.read_text() for path in (ROOT / "tests").glob("test_*.py")]
    missing = [
        name
        for name in make_benches()
        if not any(f'"{name}.py"' in text and '"--quick"' in text for text in tests)
    ]
    assert missing == []
