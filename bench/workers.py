"""One host, every core: ``--workers 2`` against one process, and 20,000 TLS sessions held.

    python bench/workers.py            # full run (a few minutes)
    python bench/workers.py --quick    # small and short: what the tests run

One reference Notifier (demo site); per configuration, a bridge started with
``--workers 1`` (one process, as before) or ``--workers 2`` (a supervisor and two
workers on the same ports, SO_REUSEPORT). Rounds alternate 1, 2, 1, 2, ...;
figures are medians over rounds.

- **Logons**: client processes run many loops of: TCP connect, full TLS 1.3
  handshake (no resumption), ``CreateSession`` (``agent1..agent50``), answer read,
  connection dropped (the bridge runs ``--linger 0``: the session ends with it).
  Logons per second of wall time, and per CPU second of the bridge's processes.
- **Deliveries**: watcher sessions (clear text, as bench/fanout.py) log on and
  watch ``queue:Sales``; the Notifier's traffic generator runs at a rate above what
  the bridge can deliver. Deliveries per second (frames read by the clients, from
  bytes and a parsed sample) and per bridge CPU second.
- **Held**: with ``--workers 2``, client processes open TLS sessions and keep them
  (20,000 in the full run: RLIMIT_NOFILE is 20,000 per process here, so the clients
  are spread over several processes); the supervisor's ``/api/status`` must count
  them all, each worker's share and resident memory are reported.

The load generators and the Notifier run on the same (small) machine as the bridge:
on 2 cores they take CPU the bridge's workers would use, so the wall-time ratio of
2 workers to 1 is a lower bound of what the workers give on a host with spare
cores; the per-CPU-second ratio says what each logon or delivery costs. Results:
bench/results/workers.json (workers-quick.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import ssl
import statistics
import subprocess
import sys
import tempfile
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
from bench.storm import raise_nofile  # noqa: E402
from bench.tunnel import process_cpu  # noqa: E402
from smbridge import pki  # noqa: E402
from smbridge.codec import Kind, encode  # noqa: E402
from smbridge.codec import catalog as c  # noqa: E402

FULL = {
    "rounds": 3,
    "logon_seconds": 8.0,
    "logon_procs": 2,
    "logon_concurrency": 48,
    "watchers": 1000,
    "watch_procs": 2,
    "cps": 4000.0,
    "watch_seconds": 6.0,
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
    "cps": 200.0,
    "watch_seconds": 1.5,
    "held": 200,
    "held_procs": 2,
}
BRIDGE_FLAGS = (
    *("--logon-free-failures", "1000", "--logon-address-max-pending", "100000"),
    *("--guard-limit", "0", "--linger", "0", "--allow-cleartext"),
)
SCRIPT = Path(__file__).resolve()


# --- the client processes ----------------------------------------------------------------
def _context(ca: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False  # the clients' own CPU is not what is measured
    context.verify_mode = ssl.CERT_NONE
    return context


async def _answer(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(4)
    return head + await reader.readexactly(int.from_bytes(head, "big"))


async def _reply(reader: asyncio.StreamReader) -> bytes:
    """The next answer (response or error), past any notification."""
    while True:
        frame = await _answer(reader)
        if frame[5] != Kind.NOTIFICATION:
            return frame


def _logon(i: int) -> bytes:
    body = {"user": f"agent{i % 50 + 1}", "password": "demo", "clientId": f"w{os.getpid()}-{i}"}
    return encode(Kind.REQUEST, *c.CREATE_SESSION, 1, body)


async def client_logons(port: int, ca: str, concurrency: int, seconds: float) -> dict[str, Any]:
    context, counts = _context(ca), {"ok": 0, "errors": 0}
    end = time.monotonic() + seconds

    async def loop(k: int) -> None:
        n = k
        while time.monotonic() < end:
            n += concurrency
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=context, server_hostname="localhost"
                )
                writer.write(_logon(n))
                frame = await _reply(reader)
                writer.transport.abort()
                counts["ok" if frame[5] == Kind.RESPONSE else "errors"] += 1
            except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
                counts["errors"] += 1

    await asyncio.gather(*(loop(k) for k in range(concurrency)))
    return counts


async def client_watch(port: int, count: int, seconds: float) -> dict[str, Any]:
    """Log on ``count`` watchers (clear text), wait for "go", count what arrives."""
    loop = asyncio.get_running_loop()
    streams = []
    for i in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_logon(i))  # the watch waits for the session (no pipelining past logon)
        await _reply(reader)
        writer.write(encode(Kind.REQUEST, *c.WATCH_QUEUE, 2, {"queue": "Sales"}))
        frame = await _reply(reader)
        if frame[5] != Kind.RESPONSE:
            raise SystemExit(f"WatchQueue refused: {frame[14:200]!r}")
        streams.append((reader, writer))
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    totals = {"bytes": 0, "sample_bytes": 0, "sample_frames": 0}
    end = time.monotonic() + seconds

    async def read(reader: asyncio.StreamReader, sample: bool) -> None:
        pending = b""
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            try:
                data = await asyncio.wait_for(reader.read(1 << 16), left)
            except TimeoutError:
                return
            if not data:
                return
            totals["bytes"] += len(data)
            if sample:
                totals["sample_bytes"] += len(data)
                pending += data
                while len(pending) >= 4 and len(pending) >= 4 + int.from_bytes(pending[:4], "big"):
                    pending = pending[4 + int.from_bytes(pending[:4], "big") :]
                    totals["sample_frames"] += 1

    await asyncio.gather(*(read(r, i < 5) for i, (r, _) in enumerate(streams)))
    for _, writer in streams:
        writer.transport.abort()
    return totals


async def client_hold(port: int, ca: str, count: int) -> dict[str, Any]:
    """Open ``count`` TLS sessions and keep them until a line arrives on stdin."""
    context, held, errors = _context(ca), [], 0
    gate = asyncio.Semaphore(200)

    async def one(i: int) -> None:
        nonlocal errors
        async with gate:
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=context, server_hostname="localhost"
                )
                writer.write(_logon(i))
                frame = await _reply(reader)
                if frame[5] != Kind.RESPONSE:
                    raise RuntimeError(frame[:120])
                held.append(writer)
            except Exception:
                errors += 1

    await asyncio.gather(*(one(i) for i in range(count)))
    print(json.dumps({"held": len(held), "errors": errors}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for writer in held:
        writer.transport.abort()
    return {"held": len(held), "errors": errors}


def client_main(args: argparse.Namespace) -> None:
    raise_nofile()
    if args.client == "logons":
        out = asyncio.run(client_logons(args.port, args.ca, args.count, args.seconds))
    elif args.client == "watch":
        out = asyncio.run(client_watch(args.port, args.count, args.seconds))
    else:
        out = asyncio.run(client_hold(args.port, args.ca, args.count))
    out["cpu_s"] = round(time.process_time(), 2)  # this load generator's own CPU
    print(json.dumps(out), flush=True)


# --- the orchestration -------------------------------------------------------------------
def spawn_client(
    mode: str, port: int, ca: Path, count: int, seconds: float
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "python"), str(SCRIPT), "--client", mode, "--port", str(port),
         "--ca", str(ca), "--count", str(count), "--seconds", str(seconds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def last_json(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def post_json(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_workers(control: str, name: str, workers: int, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            for b in get_json(f"{control}/api/state")["bridges"]:
                if b["name"] == name and b["connected"] and b.get("workersUp", 1) == workers:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{name}: {workers} worker link(s) not up")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Bridge:
    def __init__(self, work: Path, n_port: int, control: str, workers: int, tag: str) -> None:
        self.port, self.admin = free_port(), free_port()
        flags = (
            *BRIDGE_FLAGS, "--name", f"w{workers}", "--workers", str(workers),
            "--admin-port", str(self.admin), "--run-dir", str(work / f"run-{tag}"),
        )  # fmt: skip
        args = bridge_args(n_port, self.port, work, *flags)  # the later --admin-port wins
        self.server = Server(f"bridge-{tag}", args, work)
        self.workers = workers
        wait_for_port(self.port)
        wait_workers(control, f"w{workers}", workers)

    def cpu(self) -> float:
        return process_cpu(self.server.proc.pid)

    def stop(self) -> None:
        self.server.stop()


def measure_logons(bridge: Bridge, notifier: Server, ca: Path, p: dict[str, Any]) -> dict[str, Any]:
    procs = [
        spawn_client("logons", bridge.port, ca, p["logon_concurrency"], p["logon_seconds"])
        for _ in range(p["logon_procs"])
    ]
    cpu0, n0, t0 = bridge.cpu(), notifier.cpu_seconds(), time.monotonic()
    results = [last_json(proc, p["logon_seconds"] + 60) for proc in procs]
    wall = time.monotonic() - t0
    cpu, n_cpu = bridge.cpu() - cpu0, notifier.cpu_seconds() - n0
    ok = sum(r["ok"] for r in results)
    return {
        "logons": ok,
        "errors": sum(r["errors"] for r in results),
        "seconds": round(wall, 2),
        "per_s": round(ok / wall, 1),
        "bridge_cpu_s": round(cpu, 2),
        "per_bridge_cpu_s": round(ok / cpu, 1) if cpu else None,
        "notifier_cpu_s": round(n_cpu, 2),
        "clients_cpu_s": round(sum(r["cpu_s"] for r in results), 2),
    }


def measure_deliveries(
    bridge: Bridge, notifier: Server, control: str, ca: Path, p: dict[str, Any]
) -> dict[str, Any]:
    share = p["watchers"] // p["watch_procs"]
    procs = [
        spawn_client("watch", bridge.port, ca, share, p["watch_seconds"])
        for _ in range(p["watch_procs"])
    ]
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", line
    post_json(f"{control}/api/traffic", {"callsPerSecond": p["cps"]})
    try:
        time.sleep(1.0)  # warm up
        cpu0, n0, t0 = bridge.cpu(), notifier.cpu_seconds(), time.monotonic()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [last_json(proc, p["watch_seconds"] + 60) for proc in procs]
        wall = time.monotonic() - t0
        cpu, n_cpu = bridge.cpu() - cpu0, notifier.cpu_seconds() - n0
    finally:
        post_json(f"{control}/api/traffic", {"callsPerSecond": 0})
    sample_frames = sum(r["sample_frames"] for r in results)
    per_byte = sample_frames / max(1, sum(r["sample_bytes"] for r in results))
    delivered = sum(r["bytes"] for r in results) * per_byte
    return {
        "watchers": share * p["watch_procs"],
        "deliveries": round(delivered),
        "seconds": round(wall, 2),
        "per_s": round(delivered / wall),
        "bridge_cpu_s": round(cpu, 2),
        "per_bridge_cpu_s": round(delivered / cpu) if cpu else None,
        "notifier_cpu_s": round(n_cpu, 2),
        "clients_cpu_s": round(sum(r["cpu_s"] for r in results), 2),  # with their logons
        "frame_bytes": round(1 / per_byte, 1) if per_byte else None,
    }


def measure_held(bridge: Bridge, ca: Path, p: dict[str, Any]) -> dict[str, Any]:
    share = p["held"] // p["held_procs"]
    t0 = time.monotonic()
    procs = [spawn_client("hold", bridge.port, ca, share, 0) for _ in range(p["held_procs"])]
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
    p["nofile"] = raise_nofile()
    work = Path(tempfile.mkdtemp(prefix="smbridge-bench-workers-"))
    files = pki.ensure_site_pki(work / "pki")
    n_port, c_port = free_port(), free_port()
    control = f"http://127.0.0.1:{c_port}"
    notifier = Server("notifier", notifier_args(n_port, c_port, files), work)
    rounds: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    held: dict[str, Any] = {}
    try:
        wait_for_port(c_port)
        for r in range(p["rounds"]):
            for workers in (1, 2):
                bridge = Bridge(work, n_port, control, workers, f"{workers}-{r}")
                try:
                    logons = measure_logons(bridge, notifier, files.ca, p)
                    deliveries = measure_deliveries(bridge, notifier, control, files.ca, p)
                    if workers == 2 and r == p["rounds"] - 1:
                        held = measure_held(bridge, files.ca, p)
                finally:
                    bridge.stop()
                rounds[workers].append({"logons": logons, "deliveries": deliveries})
                print(f"  round {r} workers {workers}: logons {logons}", flush=True)
                print(f"  round {r} workers {workers}: deliveries {deliveries}", flush=True)
    finally:
        notifier.stop()

    def median(workers: int, kind: str, key: str) -> float:
        values = [x[kind][key] for x in rounds[workers] if x[kind][key] is not None]
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
        }
    results = {
        "params": p,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "started": time.time(),
        "rounds": rounds,
        "summary": summary,
        "held": held,
    }
    path = write_results("workers-quick" if args.quick else "workers", results)
    print(json.dumps(summary, indent=1))
    print(f"held: {held}")
    print(f"results: {path}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small, short run")
    parser.add_argument("--client", choices=("logons", "watch", "hold"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.client:
        client_main(parsed)
    else:
        main(parsed)
