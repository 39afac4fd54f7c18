"""Deliveries for bench/workers.py: the highest rate a bridge delivers whole.

Watchers (one drain process, bench/workers_clients.py) watch every queue of the demo
site. A calibration window at a low rate gives the deliveries per call per watcher;
then the traffic generator's calls per second rise step by step. Each window counts
the calls the Notifier made (what it offered: calls x deliveries per call x
watchers), the frames the bridge wrote (``smbridge_sent_frames_total``, merged over
the workers) and the bytes the clients read; a window "keeps" the rate when both
written and read frames reach ``keep`` of the offer. A miss is tried once more (the
generator catches up late ticks in bursts); two misses end the search.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.common import Server
from bench.workers_procs import Bridge, ask, get_json, per_op_us, post_json, spawn_client


def window(
    bridge: Bridge, notifier: Server, control: str, procs: list[Any], seconds: float
) -> dict[str, Any]:
    """Everyone's figures over ``seconds`` of traffic: deltas, and the clients' totals."""
    calls0 = get_json(f"{control}/api/state")["traffic"]["callsMade"]
    k0, sent0 = [ask(proc, "mark") for proc in procs], bridge.sent()
    cpu0, n0, t0 = bridge.cpu(), notifier.cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    cpu, n_cpu = bridge.cpu() - cpu0, notifier.cpu_seconds() - n0
    sent1, k1 = bridge.sent(), [ask(proc, "mark") for proc in procs]
    calls = get_json(f"{control}/api/state")["traffic"]["callsMade"] - calls0
    return {
        "wall": wall,
        "calls": calls,
        "frames": sent1[0] - sent0[0],
        "sent_bytes": sent1[1] - sent0[1],
        "read": sum(b["bytes"] - a["bytes"] for a, b in zip(k0, k1, strict=True)),
        "clients_cpu": sum(b["cpu_s"] - a["cpu_s"] for a, b in zip(k0, k1, strict=True)),
        "cpu": cpu,
        "notifier_cpu": n_cpu,
        "sample_bytes": sum(r["sample_bytes"] for r in k1),
        "sample_frames": sum(r["sample_frames"] for r in k1),
    }


def step_figures(w: dict[str, Any], watchers: int, per_call: float) -> dict[str, Any]:
    """One window's rates; ``kept``: the share of what the Notifier offered that arrived."""
    frames, wall, cpu = w["frames"], w["wall"], w["cpu"]
    offered = w["calls"] * per_call * watchers
    read_frames = w["read"] / (w["sample_bytes"] / w["sample_frames"]) if w["sample_frames"] else 0
    return {
        "calls_per_s": round(w["calls"] / wall),
        "offered_per_s": round(offered / wall),
        "per_s": round(frames / wall),
        "kept": round(min(frames, read_frames) / offered, 3) if offered else None,
        "seconds": round(wall, 2),
        "bridge_cpu_s": round(cpu, 2),
        "per_bridge_cpu_s": round(frames / cpu) if cpu else None,
        "notifier_cpu_s": round(w["notifier_cpu"], 2),
        "clients_cpu_s": round(w["clients_cpu"], 2),
        **per_op_us(frames, cpu, w["clients_cpu"], w["notifier_cpu"]),
        # cross-checks: what the clients read against the bridge's own figures
        "read_over_sent_bytes": round(w["read"] / w["sent_bytes"], 3) if w["sent_bytes"] else None,
        "read_frames_over_sent": round(read_frames / frames, 3) if frames else None,
        "sent_frame_bytes": round(w["sent_bytes"] / frames, 1) if frames else None,
    }


def measure_deliveries(
    bridge: Bridge, notifier: Server, control: str, ca: Path, p: dict[str, Any], start: float
) -> dict[str, Any]:
    """The highest rate delivered whole: calls per second raised step by step from
    ``start`` until a window keeps less than ``p["keep"]`` of what was offered."""
    share = p["watchers"] // p["watch_procs"]
    watchers = share * p["watch_procs"]
    procs = [
        spawn_client("watch", bridge.port, ca, share, "--queues", ",".join(p["queues"]))
        for _ in range(p["watch_procs"])
    ]
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", line
    steps: list[dict[str, Any]] = []
    traffic = f"{control}/api/traffic"
    try:
        # Deliveries per call per watcher, at a rate every configuration delivers whole.
        post_json(traffic, {"callsPerSecond": p["calibrate_cps"]})
        time.sleep(3 * p["warm_up"])  # past the logons' own notifications
        w = window(bridge, notifier, control, procs, p["calibrate_seconds"])
        per_call = w["frames"] / watchers / w["calls"]
        cps = start
        while len(steps) < p["max_steps"]:
            post_json(traffic, {"callsPerSecond": round(cps, 1)})
            time.sleep(p["warm_up"])
            w = window(bridge, notifier, control, procs, p["step_seconds"])
            steps.append({"cps": round(cps, 1), **step_figures(w, watchers, per_call)})
            if (steps[-1]["kept"] or 0) >= p["keep"]:
                cps *= p["step"]
            elif len(steps) > 1 and steps[-2]["cps"] == steps[-1]["cps"]:
                # missed twice at this rate (once may be a late burst of arrivals)
                if any((s["kept"] or 0) >= p["keep"] for s in steps):
                    break
                cps /= p["step"]  # nothing kept yet: the start was too high
    finally:
        post_json(traffic, {"callsPerSecond": 0})
        for proc in procs:
            ask(proc, "stop")
            proc.communicate(timeout=30)
    whole = [s for s in steps if (s["kept"] or 0) >= p["keep"]]
    best = dict(max(whole, key=lambda s: s["cps"])) if whole else {"per_s": None}
    return {"watchers": watchers, "per_call": round(per_call, 3), **best, "steps": steps}
