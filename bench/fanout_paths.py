"""The fan-out's send path alone, in one process: CPU per delivery, this tree against another.

    python bench/fanout_paths.py [--old TREE] [--watchers 300] [--events 40] [--reads 200]

``fanout_ab.py`` measures whole servers, and on a shared machine its per-CPU-second
figure swings by a third from round to round (the load generator sets how big the
upstream reads are). This drives the router's real fan-out path (``RouterHarness``:
the bridge's router, sessions, connections and replay buffers over in-memory
transports, on ``heapclock.HeapClock``) with the same upstream reads every time,
and counts the process's CPU time per delivery, in two shapes: clients that read
every turn, and clients that pause for ``--paused`` reads at a time (their runs are
held, then written at once). Connections share one sender, as in the bridge.
With ``--old``, each shape runs in a child process per tree, alternating, and the
medians are compared. Writes bench/results/fanout-paths.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


def measure(watchers: int, events: int, reads: int, paused: int) -> float:
    """CPU microseconds per delivery over ``reads`` upstream reads (this process's tree)."""
    sys.path.append(str(HERE))  # after PYTHONPATH: the tree measured comes first
    from bench.heapclock import HeapClock
    from smbridge.codec import Kind, encode
    from smbridge.codec import catalog as c
    from smbridge.testing import RouterHarness, router

    router.Clock = HeapClock  # type: ignore[attr-defined,assignment]  # the reactor's scheduling
    factories: list[Any] = []
    make_factory = router.ClientConnectionFactory  # type: ignore[attr-defined]

    def one_factory(*args: Any) -> Any:  # one sender for every connection, as in the bridge
        if not factories:
            factories.append(make_factory(*args))
        return factories[0]

    router.ClientConnectionFactory = one_factory  # type: ignore[attr-defined]
    h = RouterHarness()
    conns, transports, sub = [], [], 0
    for i in range(watchers):
        conn, t, _ = h.logon(f"agent{i + 1}")
        h.send(conn, c.WATCH_QUEUE, 2, {"queue": "Sales"})
        for frame in h.upstream():
            sub = h.serve(frame, {"queue": "Sales", "interactions": []})
        h.received(t)
        conns.append(conn)
        transports.append(t)
    data: list[bytes] = []
    n = 0
    for _ in range(reads + 20):
        chunk = []
        for _ in range(events):
            n += 1
            body = {"queue": "Sales", "changed": [{"id": f"i{n % 50}", "note": "x" * 150}]}
            chunk.append(encode(Kind.NOTIFICATION, *c.QUEUE_CHANGED, sub, body))
        data.append(b"".join(chunk))
    link = h.notifier.link

    def feed(part: list[bytes]) -> None:
        for i, read in enumerate(part):
            if paused and i % paused == 0:
                for conn in conns:
                    conn.pauseProducing()
            link.dataReceived(read)
            h.clock.advance(0)
            if paused and i % paused == paused - 1:
                for conn in conns:
                    conn.resumeProducing()
            for t in transports:
                t.clear()

    feed(data[:20])  # warm up: the replay buffers fill to their limit
    t0 = time.process_time()
    feed(data[20:])
    return (time.process_time() - t0) / (watchers * events * reads) * 1e6


def child(tree: Path, args: argparse.Namespace, paused: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, __file__, "--one", str(paused)]
    cmd += ["--watchers", str(args.watchers), "--events", str(args.events)]
    cmd += ["--reads", str(args.reads)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd=tree)
    used, us = out.stdout.split()[-2:]
    assert Path(used).resolve().is_relative_to(tree), (used, tree)  # the tree it was meant for
    return float(us)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", help="another tree (e.g. git archive HEAD) to compare with")
    parser.add_argument("--watchers", type=int, default=300)
    parser.add_argument("--events", type=int, default=40, help="events per upstream read")
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--paused", type=int, default=8, help="reads held per pause")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "bench" / "results" / "fanout-paths.json"))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        us = measure(args.watchers, args.events, args.reads, args.one)
        import smbridge

        print(smbridge.__file__, us)
        return
    trees = {"new": HERE} | ({"old": Path(args.old).resolve()} if args.old else {})
    results: dict[str, Any] = {"args": vars(args), "us_per_delivery": {}}
    for shape, paused in (("reading", 0), ("paused", args.paused)):
        rounds: dict[str, list[float]] = {name: [] for name in trees}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                rounds[name].append(round(child(tree, args, paused), 4))
        medians = {name: statistics.median(r) for name, r in rounds.items()}
        results["us_per_delivery"][shape] = {"medians": medians, "rounds": rounds}
        print(shape, medians, rounds, flush=True)
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
