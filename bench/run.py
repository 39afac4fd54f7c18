"""Run the benchmarks and write bench/results/latest.json.

    python bench/run.py            # full run (about a minute)
    python bench/run.py --quick    # small and short, to check that it works

Round trips: through the bridge versus straight to the Notifier, alternating
rounds so that drift on the machine hits both. Fan-out: the bridge versus a
minimal Twisted server writing the same bytes. Each figure is reported with its
reference from the same run, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import treq  # noqa: E402
from twisted.internet import defer, task  # noqa: E402

from bench import fanout, roundtrip  # noqa: E402
from bench.common import (  # noqa: E402
    Server,
    bridge_args,
    free_port,
    notifier_args,
    wait_for_port,
    wait_registered,
    write_results,
)
from smbridge import pki  # noqa: E402

FULL = {
    "rt_conns": 20,
    "rt_window": 8,
    "rt_seconds": 4.0,
    "rounds": 3,
    "fan_clients": 1000,
    "fan_cps": 4000.0,
    "fan_seconds": 4.0,
}
QUICK = {
    "rt_conns": 4,
    "rt_window": 2,
    "rt_seconds": 1.0,
    "rounds": 1,
    "fan_clients": 40,
    "fan_cps": 200.0,
    "fan_seconds": 1.0,
}


@defer.inlineCallbacks
def main(reactor: Any, args: argparse.Namespace) -> Any:
    p = QUICK if args.quick else FULL
    work = Path(tempfile.mkdtemp(prefix="smbridge-bench-"))
    files = pki.ensure_site_pki(work / "pki")
    n_port, c_port, b_port = free_port(), free_port(), free_port()
    control = f"http://127.0.0.1:{c_port}"
    notifier = Server("notifier", notifier_args(n_port, c_port, files), work)
    bridge = Server("bridge", bridge_args(n_port, b_port, work, "--allow-cleartext"), work)
    results: dict[str, Any] = {
        "params": p,
        "machine": platform.platform(),
        "python": platform.python_version(),
        "started": time.time(),
    }
    try:
        wait_for_port(c_port)
        wait_for_port(b_port)
        yield wait_registered(reactor, control)
        yield treq.post(f"{control}/api/traffic", json={"callsPerSecond": 0})
        via, dire = [], []
        for _ in range(p["rounds"]):
            r = yield roundtrip.through_bridge(
                reactor,
                files,
                b_port,
                p["rt_conns"],
                p["rt_window"],
                p["rt_seconds"],
                [bridge, notifier],
            )
            via.append(r)
            r = yield roundtrip.direct(
                reactor, files, n_port, p["rt_conns"], p["rt_window"], p["rt_seconds"], [notifier]
            )
            dire.append(r)
        via_rate = statistics.median(r["rate"] for r in via)
        dir_rate = statistics.median(r["rate"] for r in dire)
        results["roundtrip"] = {
            "through_bridge": via,
            "direct": dire,
            "through_bridge_rate": round(via_rate),
            "direct_rate": round(dir_rate),
            "ratio": round(via_rate / dir_rate, 3),
        }
        frames_file = work / "frames.bin"
        fan = yield fanout.through_bridge(
            reactor,
            b_port,
            control,
            p["fan_clients"],
            p["fan_cps"],
            p["fan_seconds"],
            [bridge, notifier],
            frames_file,
        )
    finally:
        bridge.stop()
        notifier.stop()
    ref_port = free_port()
    ref = Server.script(
        "minimal-fanout",
        "minimal_fanout.py",
        ["--port", str(ref_port), "--clients", str(p["fan_clients"]), "--frames", str(frames_file)],
        work,
    )
    try:
        wait_for_port(ref_port)
        base = yield fanout.reference(reactor, ref_port, p["fan_clients"], p["fan_seconds"], [ref])
    finally:
        ref.stop()
    results["fanout"] = {
        "through_bridge": fan,
        "minimal_server": base,
        "through_bridge_rate": round(fan["rate"]),
        "minimal_server_rate": round(base["rate"]),
        "ratio": round(fan["rate"] / base["rate"], 3) if base["rate"] else None,
    }
    name = "quick" if args.quick else "latest"
    path = write_results(name, results)
    rt, fo = results["roundtrip"], results["fanout"]
    print(
        f"round trips/s: through bridge {rt['through_bridge_rate']}, direct {rt['direct_rate']}, "
        f"ratio {rt['ratio']}"
    )
    print(
        f"fan-out deliveries/s ({p['fan_clients']} watchers): bridge {fo['through_bridge_rate']}, "
        f"minimal server {fo['minimal_server_rate']}, ratio {fo['ratio']}"
    )
    print(f"results: {path}")
    print(json.dumps({"work": str(work)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small, short run")
    task.react(main, [parser.parse_args()])
