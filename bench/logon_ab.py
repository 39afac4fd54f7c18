"""Logon A/B: this checkout's bridge against another tree's, and raw TLS, same run.

    python bench/logon_ab.py --old /path/to/other/checkout [--rounds 8] [--logons 1000]

Two bridges (this tree's and ``--old``'s, each its own ``twistd`` with that tree first
on ``PYTHONPATH``) on one Notifier, and ``minimal_tls.py``; each round gives every
server ``--logons`` reconnects of ``bench/reconnect.py``'s ``logon`` case (full TLS
handshake, CreateSession with a clientId, answer, close) from 4 threads, the order
rotating so drift on the machine hits all three. The figure is logons per CPU second
of each server process (user and system time from /proc); medians, ranges and every
round go to bench/results/logon-ab.json. A tool for measuring a change to the logon
path before and after (docs/benchmarks.md, "Results"), not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    BIN,
    Server,
    bridge_args,
    free_port,
    notifier_args,
    wait_for_port,
    write_results,
)
from bench.reconnect import Visit, client_loop  # noqa: E402
from smbridge import pki  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
THREADS = 4


def cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (10 ms ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bridges_up(control: str, count: int, deadline: float = 30.0) -> None:
    """Wait until ``count`` bridges are registered with the Notifier."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"{control}/api/state", timeout=2) as r:
                up = [b for b in json.load(r).get("bridges", []) if b.get("connected")]
            if len(up) >= count:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"fewer than {count} bridges registered with the Notifier")


def measure(port: int, pid: int, ca: Path, logons: int, ref_port: int) -> dict[str, Any]:
    """One round on one server: every thread sets up, then all log on while CPU counts."""
    import ssl

    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    visit = Visit(port, context, False)
    per = logons // THREADS
    out: dict[str, Any] = {
        "ready": threading.Event(),
        "lock": threading.Lock(),
        "reused": 0,
        "errors": 0,
        "reference_port": ref_port,
    }
    threads = [
        threading.Thread(target=client_loop, args=(visit, "logon", per, i, out))
        for i in range(THREADS)
    ]
    for t in threads:
        t.start()
    time.sleep(0.5)  # setups done (each is one logon); the bench is not a test
    cpu0 = cpu(pid)
    out["ready"].set()
    for t in threads:
        t.join(120)
    time.sleep(0.1)  # the server's side of the last closes
    used = cpu(pid) - cpu0
    n = per * THREADS
    return {
        "logons": n,
        "errors": out["errors"],
        "cpu": round(used, 2),
        "per_cpu_s": round(n / used) if used > 0 else None,
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="smbridge-bench-logon-ab-"))
    files = pki.ensure_site_pki(work / "pki")
    n_port, c_port = free_port(), free_port()
    notifier = Server("notifier", notifier_args(n_port, c_port, files), work)
    trees = {"new": ROOT, "old": Path(args.old).resolve()}
    ports = {name: free_port() for name in (*trees, "reference")}
    servers: dict[str, Server] = {}
    for name, tree in trees.items():
        # ``env`` execs twistd in place: the pid measured is the bridge's.
        command = ["env", f"PYTHONPATH={tree}", str(BIN / "twistd"), "-n", "--pidfile=", "-l", "-"]
        args_ = bridge_args(n_port, ports[name], work, "--name", f"bridge-{name}")
        servers[name] = Server(name, args_, work, command=command)
    servers["reference"] = Server.script(
        "minimal-tls", "minimal_tls.py", [str(ports["reference"]), str(files.bridge)], work
    )
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    order = ["new", "old", "reference"]
    try:
        for port in (c_port, *ports.values()):
            wait_for_port(port)
        bridges_up(f"http://127.0.0.1:{c_port}", 2)
        for r in range(args.rounds):
            for name in order[r % 3 :] + order[: r % 3]:
                pid = servers[name].proc.pid
                row = measure(ports[name], pid, files.ca, args.logons, ports["reference"])
                rounds[name].append(row)
                print(f"round {r} {name:9} {row['per_cpu_s']}/CPU-s errors {row['errors']}")
    finally:
        for server in servers.values():
            server.stop()
        notifier.stop()
    summary: dict[str, Any] = {}
    for name, rows in rounds.items():
        rates = [row["per_cpu_s"] for row in rows if row["per_cpu_s"]]
        summary[name] = {
            "median": statistics.median(rates) if rates else None,
            "range": [min(rates), max(rates)] if rates else None,
            "errors": sum(row["errors"] for row in rows),
        }
    ratios = {
        f"{name}_vs_reference": [
            round(a["per_cpu_s"] / b["per_cpu_s"], 3) if a["per_cpu_s"] and b["per_cpu_s"] else None
            for a, b in zip(rounds[name], rounds["reference"], strict=True)
        ]
        for name in trees
    }
    results = {
        "params": {"rounds": args.rounds, "logons": args.logons, "old": str(trees["old"])},
        "started": time.time(),
        "rounds": rounds,
        "summary": summary,
        "ratios_by_round": ratios,
    }
    out = write_results("logon-ab", results)
    print(json.dumps(summary))
    print(json.dumps(ratios))
    print(f"results: {out}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--old", required=True, help="the other tree (a checkout or archive)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--logons", type=int, default=1000, help="per server per round")
    main(parser.parse_args())
