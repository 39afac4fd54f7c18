"""Run the benchmarks and write bench/results/latest.json.

    python bench/run.py            # full run (about two minutes)
    python bench/run.py --quick    # small and short, to check that it works

Each figure beside the best simple program doing the same bytes, measured in the
same run, rounds alternating so that drift on the machine hits both:

- round trips: through the bridge versus straight to the Notifier;
- fan-out at saturation (a published backlog drained): the bridge versus
  ``minimal_fanout.py`` (one coalesced write per client per reactor turn),
  deliveries per CPU second of each;
- heartbeats: the bridge versus ``minimal_responder.py`` (a bare responder),
  answers per CPU second of each.

Logons against raw TLS handshakes are bench/reconnect.py's.
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

from bench import fanout, heartbeat, roundtrip  # noqa: E402
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
    "fan_events": 15000,  # a backlog of 15,000 events for 1,000 clients: 15 M deliveries
    "hb_conns": 20,
    "hb_window": 8,
    "hb_seconds": 3.0,
}
PARTS = ("roundtrip", "fanout", "heartbeat")
QUICK = {
    "rt_conns": 4,
    "rt_window": 2,
    "rt_seconds": 1.0,
    "rounds": 1,
    "fan_clients": 40,
    "fan_events": 1000,
    "hb_conns": 4,
    "hb_window": 2,
    "hb_seconds": 1.0,
}


def median_of(rounds: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rounds if r.get(key)]
    return statistics.median(values) if values else 0.0


def compare(bridge: list[dict[str, Any]], ref: list[dict[str, Any]], ref_name: str) -> Any:
    """The rounds of both, and the ratio of their median figures per CPU second."""
    b, r = median_of(bridge, "per_cpu_s"), median_of(ref, "per_cpu_s")
    return {
        "through_bridge": bridge,
        ref_name: ref,
        "reference": ref_name,
        "through_bridge_per_cpu_s": round(b),
        f"{ref_name}_per_cpu_s": round(r),
        "through_bridge_rate": round(median_of(bridge, "rate")),
        f"{ref_name}_rate": round(median_of(ref, "rate")),
        "ratio_per_cpu_s": round(b / r, 3) if b and r else None,  # None: a clock read 0
        # the spread of the rounds: (max - min) / median, each side
        "noise": [
            round((max(x) - min(x)) / statistics.median(x), 3) if x else None
            for x in ([v["per_cpu_s"] for v in rs if v.get("per_cpu_s")] for rs in (bridge, ref))
        ],
    }


@defer.inlineCallbacks
def main(reactor: Any, args: argparse.Namespace) -> Any:
    p = dict(QUICK if args.quick else FULL)
    if args.rounds:
        p["rounds"] = args.rounds
    parts = set(args.only or PARTS)
    work = Path(tempfile.mkdtemp(prefix="smbridge-bench-"))
    files = pki.ensure_site_pki(work / "pki")
    n_port, c_port, b_port = free_port(), free_port(), free_port()
    fan_port, hb_port = free_port(), free_port()
    control = f"http://127.0.0.1:{c_port}"
    notifier = Server("notifier", notifier_args(n_port, c_port, files), work)
    # Every logon comes from 127.0.0.1, 20 share a user and rounds log on again: the
    # logon throttle (a guard against guessing) is opened as in bench/storm.py.
    generous = ("--logon-free-failures", "1000", "--logon-address-max-pending", "100000")
    bridge = Server(
        "bridge", bridge_args(n_port, b_port, work, "--allow-cleartext", *generous), work
    )
    hb_ref = Server.script("minimal-responder", "minimal_responder.py", [str(hb_port)], work)
    servers = [hb_ref, bridge, notifier]

    def start_fan_ref() -> Server:
        return Server.script(
            "minimal-fanout",
            "minimal_fanout.py",
            [
                "--port", str(fan_port), "--notifier-port", str(n_port),
                "--pki", str(work / "pki"), "--clients", str(p["fan_clients"]),
            ],
            work,
        )  # fmt: skip

    results: dict[str, Any] = {
        "params": p,
        "machine": platform.platform(),
        "python": platform.python_version(),
        "started": time.time(),
    }
    try:
        for port in (c_port, b_port, hb_port):
            wait_for_port(port)
        yield wait_registered(reactor, control)  # the bridge (the reference is not up yet)
        servers.append(fan_ref := start_fan_ref())
        wait_for_port(fan_port)
        yield treq.post(f"{control}/api/traffic", json={"callsPerSecond": 0})
        via, dire = [], []
        for _ in range(p["rounds"] if "roundtrip" in parts else 0):
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
        via_rate = statistics.median(r["rate"] for r in via) if via else 0
        dir_rate = statistics.median(r["rate"] for r in dire) if dire else 0
        results["roundtrip"] = {
            "through_bridge": via,
            "direct": dire,
            "through_bridge_rate": round(via_rate),
            "direct_rate": round(dir_rate),
            "ratio": round(via_rate / dir_rate, 3) if dir_rate else None,
        }
        fan_b, fan_r = [], []
        fan = (int(p["fan_clients"]), int(p["fan_events"]))
        for _ in range(p["rounds"] if "fanout" in parts else 0):
            r = yield fanout.through_bridge(reactor, b_port, control, *fan, [bridge, notifier])
            fan_b.append(r)
            r = yield fanout.reference(reactor, fan_port, control, *fan, [fan_ref, notifier])
            fan_r.append(r)
        results["fanout"] = compare(fan_b, fan_r, "minimal_server")
        hb_b, hb_r = [], []
        hb = (p["hb_conns"], p["hb_window"], p["hb_seconds"])
        for _ in range(p["rounds"] if "heartbeat" in parts else 0):
            r = yield heartbeat.through_bridge(reactor, b_port, *hb, [bridge])
            hb_b.append(r)
            r = yield heartbeat.reference(reactor, hb_port, *hb, [hb_ref])
            hb_r.append(r)
        results["heartbeat"] = compare(hb_b, hb_r, "bare_responder")
    finally:
        for server in servers:
            server.stop()
    name = "quick" if args.quick else "latest"
    if args.only:
        name += "-" + "-".join(sorted(parts))
    path = write_results(name, results)
    rt, fo, hbr = results["roundtrip"], results["fanout"], results["heartbeat"]
    print(
        f"round trips/s: through bridge {rt['through_bridge_rate']}, direct {rt['direct_rate']}, "
        f"ratio {rt['ratio']}"
    )
    print(
        f"fan-out deliveries per CPU-s ({p['fan_clients']} watchers): bridge "
        f"{fo['through_bridge_per_cpu_s']}, minimal server {fo['minimal_server_per_cpu_s']}, "
        f"ratio {fo['ratio_per_cpu_s']} (noise {fo['noise']})"
    )
    print(
        f"heartbeats per CPU-s: bridge {hbr['through_bridge_per_cpu_s']}, bare responder "
        f"{hbr['bare_responder_per_cpu_s']}, ratio {hbr['ratio_per_cpu_s']} (noise {hbr['noise']})"
    )
    print(f"results: {path}")
    print(json.dumps({"work": str(work)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small, short run")
    parser.add_argument("--only", action="append", choices=PARTS, help="only this part")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 3, quick 1)")
    task.react(main, [parser.parse_args()])
