"""One host, every core: ``--workers 2`` against one process, and 20,000 TLS sessions held.

    python bench/workers.py            # full run (a few minutes)
    python bench/workers.py --quick    # small and short: what the tests run

One reference Notifier (demo site); per configuration, a bridge started with
``--workers 1`` (one process, as before) or ``--workers 2`` (a supervisor and two
workers on the same ports, SO_REUSEPORT). Rounds alternate 1, 2, 1, 2, ...;
figures are medians over rounds.

- **Logons**: client processes (one ``select.epoll`` loop each, bench/workers_clients.py)
  keep 48 logons under way: TCP connect, full TLS 1.3 handshake (no resumption),
  ``CreateSession`` (``agent1..agent50``), answer read, connection closed (the bridge
  runs ``--linger 0``: the session ends with it). Logons per second of wall time and
  per CPU second of the bridge's processes, and each party's CPU per logon.
- **Deliveries**: 1,000 clear-text watchers of the demo site's three queues, drained
  by one cheap client process; the traffic generator's rate rises step by step and
  the figure is the highest rate the bridge delivers whole (bench/workers_deliveries.py),
  counted from the bridge's own ``smbridge_sent_frames_total`` and cross-checked
  against the bytes the clients read.
- **Held**: with ``--workers 2``, client processes open TLS sessions and keep them
  (20,000 in the full run: RLIMIT_NOFILE is 20,000 per process here, so the clients
  are spread over several processes); the supervisor's ``/api/status`` must count
  them all, each worker's share and resident memory are reported.

The load generators and the Notifier run on the same 2 cores as the bridge, so the
summary also gives each party's CPU per operation and the best 2:1 ratio those costs
allow here (``ratio_bound``: 2 cores over everyone's CPU per operation with two
workers, against one core over the bridge's with one). Results:
bench/results/workers.json (workers-quick.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import workers_clients as clients  # noqa: E402
from bench.common import (  # noqa: E402
    Server,
    free_port,
    notifier_args,
    wait_for_port,
    write_results,
)
from bench.storm import raise_nofile  # noqa: E402
from bench.workers_deliveries import measure_deliveries  # noqa: E402
from bench.workers_procs import (  # noqa: E402
    US_KEYS,
    Bridge,
    get_json,
    last_json,
    per_op_us,
    rss_kb,
    spawn_client,
)
from smbridge import pki  # noqa: E402

FULL = {
    "rounds": 3,
    "logon_seconds": 6.0,
    "logon_procs": 2,
    "logon_concurrency": 48,
    "watchers": 1000,
    "watch_procs": 1,
    "queues": ["Sales", "Support", "Billing"],
    "calibrate_cps": 200.0,
    "calibrate_seconds": 2.0,
    "cps": 800.0,
    "step": 1.2,
    "max_steps": 14,
    "keep": 0.95,
    "restart_below": 1.45,
    "warm_up": 0.75,
    "step_seconds": 2.5,
    "held": 20000,
    "held_procs": 4,
}
QUICK = {
    "rounds": 1,
    "logon_seconds": 1.5,
    "logon_procs": 1,
    "logon_concurrency": 8,
    "watchers": 40,
    "watch_procs": 1,
    "queues": ["Sales", "Support", "Billing"],
    "calibrate_cps": 50.0,
    "calibrate_seconds": 2.0,
    "cps": 100.0,
    "step": 2.0,
    "max_steps": 2,
    "keep": 0.95,
    "restart_below": 1.35,
    "warm_up": 1.0,
    "step_seconds": 1.0,
    "held": 200,
    "held_procs": 2,
}


# --- the client processes (bench/workers_clients.py) -------------------------------------
def client_main(args: argparse.Namespace) -> None:
    raise_nofile()
    if args.client == "watch":
        clients.run_watch(args.port, args.count, args.queues.split(","))
        return
    cpu0 = time.process_time()
    if args.client == "logons":
        out = clients.run_logons(args.port, args.count, args.seconds)
    else:
        out = asyncio.run(clients.run_hold(args.port, args.count))
    out["cpu_s"] = round(time.process_time() - cpu0, 3)  # this load generator's own CPU
    print(json.dumps(out), flush=True)


# --- the orchestration -------------------------------------------------------------------
def measure_logons(bridge: Bridge, notifier: Server, ca: Path, p: dict[str, Any]) -> dict[str, Any]:
    seconds = p["logon_seconds"]
    args = ("--seconds", str(seconds))
    procs = [
        spawn_client("logons", bridge.port, ca, p["logon_concurrency"], *args)
        for _ in range(p["logon_procs"])
    ]
    cpu0, n0, t0 = bridge.cpu(), notifier.cpu_seconds(), time.monotonic()
    results = [last_json(proc, seconds + 60) for proc in procs]
    wall = time.monotonic() - t0
    cpu, n_cpu = bridge.cpu() - cpu0, notifier.cpu_seconds() - n0
    ok = sum(r["ok"] for r in results)
    k_cpu = sum(r["cpu_s"] for r in results)
    return {
        "logons": ok,
        "errors": sum(r["errors"] for r in results),
        "seconds": round(wall, 2),
        "per_s": round(ok / wall, 1),
        "bridge_cpu_s": round(cpu, 2),
        "per_bridge_cpu_s": round(ok / cpu, 1) if cpu else None,
        "notifier_cpu_s": round(n_cpu, 2),
        "clients_cpu_s": round(k_cpu, 2),
        **per_op_us(ok, cpu, k_cpu, n_cpu),
    }


def cpu_bound(median: Any, kind: str) -> dict[str, Any]:
    """The best 2:1 ratio the machine allows, from each party's CPU per operation.

    One worker does at most 1 / s1 operations a second (one core; s: the bridge's CPU
    per operation); two workers, with clients and Notifier on the same 2 cores, at most
    2 / (s2 + k2 + n2) (k, n: the clients' and the Notifier's CPU per operation).
    """
    us = {f"{key}_{w}": median(w, kind, f"us_{key}") for w in (1, 2) for key in US_KEYS}
    one_max = 1e6 / us["bridge_1"] if us["bridge_1"] else 0.0
    two_max = 2e6 / sum(us[f"{key}_2"] for key in US_KEYS) if us["bridge_2"] else 0.0
    return {
        "cpu_us_per_op": us,
        "workers_1_max_per_s": round(one_max, 1),
        "workers_2_max_per_s": round(two_max, 1),
        "ratio_bound": round(two_max / one_max, 2) if one_max else None,
    }


def measure_held(bridge: Bridge, ca: Path, p: dict[str, Any]) -> dict[str, Any]:
    share = p["held"] // p["held_procs"]
    t0 = time.monotonic()
    procs = [spawn_client("hold", bridge.port, ca, share) for _ in range(p["held_procs"])]
    counts = []
    for proc in procs:
        assert proc.stdout is not None
        counts.append(json.loads(proc.stdout.readline()))
    opened = time.monotonic() - t0
    status = get_json(f"http://127.0.0.1:{bridge.admin}/api/status")
    workers = status.get("workers", {}).get("list", [])
    result = {
        "clients": share * p["held_procs"],
        "held_by_clients": sum(x["held"] for x in counts),
        "errors": sum(x["errors"] for x in counts),
        "open_seconds": round(opened, 1),
        "bridge_sessions": status["sessions"]["total"],
        "per_worker": [
            {"sessions": w["sessions"], "rss_kb": rss_kb(w["pid"]) if w["pid"] else None}
            for w in workers
        ],
    }
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("close\n")
        proc.stdin.flush()
    for proc in procs:
        proc.communicate(timeout=60)
    return result


def main(args: argparse.Namespace) -> dict[str, Any]:
    p: dict[str, Any] = dict(QUICK if args.quick else FULL)
    for key in ("rounds", "cps", "watchers"):
        if getattr(args, key) is not None:
            p[key] = getattr(args, key)
    if args.queues:
        p["queues"] = args.queues.split(",")
    if args.no_held or args.only:
        p["held"] = 0
    p["nofile"] = raise_nofile()
    work = Path(tempfile.mkdtemp(prefix="smbridge-bench-workers-"))
    files = pki.ensure_site_pki(work / "pki")
    n_port, c_port = free_port(), free_port()
    control = f"http://127.0.0.1:{c_port}"
    notifier = Server("notifier", notifier_args(n_port, c_port, files), work)
    try:  # its arrivals on time when the cores are busy (its CPU is still counted)
        os.setpriority(os.PRIO_PROCESS, notifier.proc.pid, -5)
    except OSError:
        pass
    rounds: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    start = {1: p["cps"], 2: p["cps"]}
    held: dict[str, Any] = {}
    try:
        wait_for_port(c_port)
        for r in range(p["rounds"]):
            for workers in (1, 2):
                bridge = Bridge(work, n_port, control, workers, f"{workers}-{r}")
                try:
                    logons: dict[str, Any] = {}
                    deliveries: dict[str, Any] = {}
                    if args.only != "deliveries":
                        logons = measure_logons(bridge, notifier, files.ca, p)
                    if args.only != "logons":
                        deliveries = measure_deliveries(
                            bridge, notifier, control, files.ca, p, start[workers]
                        )
                        if deliveries["per_s"]:  # the next round starts a little below
                            start[workers] = deliveries["cps"] / p["restart_below"]
                    if workers == 2 and r == p["rounds"] - 1 and p["held"]:
                        held = measure_held(bridge, files.ca, p)
                finally:
                    bridge.stop()
                rounds[workers].append({"logons": logons, "deliveries": deliveries})
                print(f"  round {r} workers {workers}: logons {logons}", flush=True)
                print(f"  round {r} workers {workers}: deliveries {deliveries}", flush=True)
    finally:
        notifier.stop()

    def median(workers: int, kind: str, key: str) -> float:
        values = [x[kind][key] for x in rounds[workers] if x[kind].get(key) is not None]
        return float(statistics.median(values)) if values else 0.0

    summary: dict[str, Any] = {}
    for kind in ("logons", "deliveries"):
        one, two = median(1, kind, "per_s"), median(2, kind, "per_s")
        c1, c2 = median(1, kind, "per_bridge_cpu_s"), median(2, kind, "per_bridge_cpu_s")
        summary[kind] = {
            "workers_1_per_s": one,
            "workers_2_per_s": two,
            "ratio_per_s": round(two / one, 2) if one else None,
            "workers_1_per_bridge_cpu_s": c1,
            "workers_2_per_bridge_cpu_s": c2,
            "ratio_per_bridge_cpu_s": round(c2 / c1, 2) if c1 else None,
            **cpu_bound(median, kind),
        }
    results = {
        "params": p,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "started": time.time(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "rounds": rounds,
        "summary": summary,
        "held": held,
    }
    path = write_results(args.name or ("workers-quick" if args.quick else "workers"), results)
    print(json.dumps(summary, indent=1))
    print(f"held: {held}")
    print(f"results: {path}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small, short run")
    parser.add_argument("--rounds", type=int, help="rounds per configuration (3)")
    parser.add_argument("--cps", type=float, help="the traffic generator's calls per second")
    parser.add_argument("--watchers", type=int, help="watcher sessions (1,000)")
    parser.add_argument("--only", choices=("logons", "deliveries"), help="one case (no held)")
    parser.add_argument("--no-held", action="store_true", help="skip the held sessions")
    parser.add_argument("--name", help="results file name (bench/results/NAME.json)")
    parser.add_argument("--client", choices=("logons", "watch", "hold"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--queues", help="queues each watcher watches, comma-separated")
    parsed = parser.parse_args()
    if parsed.client:
        client_main(parsed)
    else:
        main(parsed)
