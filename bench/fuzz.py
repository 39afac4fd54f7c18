"""Fuzz the frame decoder with mutated client frames (nightly: ``make fuzz``).

    python bench/fuzz.py --count 1000000 --seconds 900   # the nightly run
    python bench/fuzz.py --count 5000 --seed 7           # a short one

Each input is one hostile frame from :func:`smbridge.codec.fuzzing.mutated` (deep
nesting, huge numbers, lone surrogates in every string field, flipped bytes,
bad headers, truncation), fed to a fresh decoder whole and, every tenth input
under 4 KiB,
one byte at a time; :func:`smbridge.codec.fuzzing.check` asserts the decoder's
contract. The run stops at ``--count`` inputs or ``--seconds``, whichever comes
first, prints one JSON line of figures, and exits 1 on the first broken input
(saved to ``--crash-dir``) or when fewer than ``--min-count`` inputs ran.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smbridge.codec import BadFrame, Decoder, Frame  # noqa: E402
from smbridge.codec.fuzzing import check, mutated  # noqa: E402


def _same(a: list[Frame | BadFrame], b: list[Frame | BadFrame]) -> bool:
    """Equal events; a bad length is found before its requestId arrives one byte at a time."""
    if len(a) != len(b):
        return False
    return all(
        x == y or (isinstance(x, BadFrame) and isinstance(y, BadFrame) and x.message == y.message)
        for x, y in zip(a, b, strict=True)
    )


def run(count: int, seconds: float, seed: int, crash_dir: Path) -> dict[str, object]:
    rng = random.Random(seed)
    started = time.monotonic()
    figures = {"inputs": 0, "frames": 0, "bad_frames": 0, "invalid_text": 0, "partial": 0}
    for n in range(count):
        if n % 1000 == 0 and time.monotonic() - started > seconds:
            break
        data = mutated(rng, n + 1)
        try:
            decoder = Decoder()
            events = check(decoder, data)
            if n % 10 == 0 and len(data) < 4096:  # one byte at a time: the same
                single = Decoder()
                pieces = [e for i in range(len(data)) for e in check(single, data[i : i + 1])]
                assert _same(pieces, events), (pieces, events)
        except Exception:
            crash_dir.mkdir(parents=True, exist_ok=True)
            path = crash_dir / f"crash-{seed}-{n}.bin"
            path.write_bytes(data)
            traceback.print_exc()
            print(f"broken input {n} saved to {path}", file=sys.stderr)
            figures["failed_at"] = n
            break
        figures["inputs"] += 1
        for event in events:
            if isinstance(event, BadFrame):
                figures["bad_frames"] += 1
            else:
                figures["frames"] += 1
                figures["invalid_text"] += event.invalid is not None
        figures["partial"] += decoder.buffered > 0
    elapsed = time.monotonic() - started
    return {**figures, "seed": seed, "seconds": round(elapsed, 1),
            "per_second": round(figures["inputs"] / elapsed) if elapsed else 0}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="inputs to run")
    parser.add_argument("--seconds", type=float, default=1800.0, help="stop after this long")
    parser.add_argument("--min-count", type=int, default=0, help="fail below this many inputs")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    parser.add_argument("--crash-dir", type=Path, default=Path("bench/results/fuzz-crashes"))
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time())
    result = run(args.count, args.seconds, seed, args.crash_dir)
    print(json.dumps(result))
    if "failed_at" in result:
        return 1
    return 0 if result["inputs"] >= args.min_count else 1


if __name__ == "__main__":
    sys.exit(main())
