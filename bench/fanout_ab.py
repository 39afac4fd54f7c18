"""Fan-out A/B: this checkout's bridge against another tree's, and the reference, same run.

    python bench/fanout_ab.py --old /path/to/other/checkout [--rounds 5]

Two bridges (this tree's and ``--old``'s, each its own ``twistd`` with that tree
first on ``PYTHONPATH``) on one Notifier, and ``minimal_fanout.py``; rounds rotate
new, old, reference, so drift on the machine hits all three. The figure is
deliveries per CPU second of each server process; medians and every round are
written to bench/results/fanout-ab.json. A tool for measuring a change to the
fan-out path before and after (docs/benchmarks.md), not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, task  # noqa: E402

from bench import fanout  # noqa: E402
from bench.common import (  # noqa: E402
    BIN,
    Server,
    bridge_args,
    free_port,
    notifier_args,
    wait_for_port,
    wait_registered,
    write_results,
)
from smbridge import pki  # noqa: E402

GENEROUS = ("--logon-free-failures", "1000", "--logon-address-max-pending", "100000")


def bridge(name: str, tree: Path, n_port: int, port: int, work: Path) -> Server:
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = f"{tree}{os.pathsep}{env_path}" if env_path else str(tree)
    try:
        args = bridge_args(n_port, port, work, "--allow-cleartext", "--name", name, *GENEROUS)
        cmd = [str(BIN / "twistd"), "-n", "--pidfile=", "-l", "-"]
        return Server(name, args, work, command=cmd)
    finally:
        if env_path:
            os.environ["PYTHONPATH"] = env_path
        else:
            os.environ.pop("PYTHONPATH")


@defer.inlineCallbacks
def main(reactor: Any, args: argparse.Namespace) -> Any:
    work = Path(tempfile.mkdtemp(prefix="smbridge-bench-ab-"))
    files = pki.ensure_site_pki(work / "pki")
    n_port, c_port, new_port, old_port, ref_port = (free_port() for _ in range(5))
    control = f"http://127.0.0.1:{c_port}"
    here = Path(__file__).resolve().parent.parent
    servers = [Server("notifier", notifier_args(n_port, c_port, files), work)]
    try:
        wait_for_port(n_port)
        servers.append(bridge("new", here, n_port, new_port, work))
        servers.append(bridge("old", Path(args.old).resolve(), n_port, old_port, work))
        for port in (c_port, new_port, old_port):
            wait_for_port(port)
        yield wait_registered(reactor, control)
        yield task.deferLater(reactor, 2.0, lambda: None)  # both links up
        servers.append(
            Server.script(
                "minimal-fanout",
                "minimal_fanout.py",
                [
                    "--port", str(ref_port), "--notifier-port", str(n_port),
                    "--pki", str(work / "pki"), "--clients", str(args.clients),
                ],
                work,
            )
        )  # fmt: skip
        wait_for_port(ref_port)
        notifier, new, old, ref = servers
        load = (args.clients, args.events)
        rounds: dict[str, list[dict[str, Any]]] = {"new": [], "old": [], "reference": []}
        for _ in range(args.rounds):
            for name, server, port in (("new", new, new_port), ("old", old, old_port)):
                r = yield fanout.through_bridge(reactor, port, control, *load, [server, notifier])
                rounds[name].append(r)
                print(name, r["per_cpu_s"], r["cpu"], flush=True)
            r = yield fanout.reference(reactor, ref_port, control, *load, [ref, notifier])
            rounds["reference"].append(r)
            print("reference", r["per_cpu_s"], r["cpu"], flush=True)
    finally:
        for server in reversed(servers):
            server.stop()
    medians = {k: statistics.median(r["per_cpu_s"] or 0 for r in rs) for k, rs in rounds.items()}
    results = {
        "rounds": rounds,
        "per_cpu_s": medians,
        "new_vs_old": round(medians["new"] / medians["old"], 3) if medians["old"] else None,
        "new_vs_reference": (
            round(medians["new"] / medians["reference"], 3) if medians["reference"] else None
        ),
        "old_vs_reference": (
            round(medians["old"] / medians["reference"], 3) if medians["reference"] else None
        ),
    }
    path = write_results("fanout-ab", results)
    print({k: v for k, v in results.items() if k != "rounds"})
    print(f"results: {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--old", required=True, help="the other tree (e.g. git archive HEAD)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--events", type=int, default=15000, help="the backlog published")
    task.react(main, [parser.parse_args()])
