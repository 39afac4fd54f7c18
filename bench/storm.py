"""Logon storms: every client back at once (as after a switchover), listen backlog 50 vs 4096.

    python bench/storm.py            # full run: 5,000 clients per case (under 2 minutes)
    python bench/storm.py --quick    # 300 clients per case, to check that it works

One reference Notifier (demo site) and, per case, one bridge started with
``--backlog 50`` (Twisted's default before issue 16) or ``--backlog 4096`` (the
default now). All clients then connect at the same instant: TCP connect, TLS 1.3
handshake, ``CreateSession`` as ``agent1``..``agent50`` with a distinct clientId each,
answered; they stay connected until every one is back, then all close. Reported per
case: time-to-all-back (last answer), the slowest TCP connect and how many connects
took 1 s or more (a SYN dropped by a full accept queue is retried after 1 s, 3 s, ...),
percentiles of the time to logged on, errors, and the bridge's CPU seconds over the
storm (from /proc, 10 ms ticks). The kernel caps the backlog at net.core.somaxconn,
read and reported here.

Clients are non-blocking sockets on one asyncio loop in this process (its CPU competes
with the bridge's on a small machine: the time-to-all-back is an upper bound). The
bridge is given generous logon-throttle limits (every logon comes from 127.0.0.1 and
100 share each user: ``--logon-free-failures 1000``, ``--logon-address-max-pending
100000``). The soft RLIMIT_NOFILE is raised to the hard limit here and in the bridge
(``preexec_fn``); the bridge keeps its ``--fd-reserve``. Results:
bench/results/storm.json (storm-quick.json).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import time
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
from bench.reconnect import frame_length, wait_registered  # noqa: E402
from bench.tunnel import process_cpu  # noqa: E402
from smbridge import pki  # noqa: E402
from smbridge.codec import Kind, encode  # noqa: E402
from smbridge.codec import catalog as c  # noqa: E402
from smbridge.listening import somaxconn  # noqa: E402
from smbridge.testing import decode_all, stop_process  # noqa: E402

FULL = {"clients": 5000, "backlogs": [50, 4096], "deadline": 50.0}
QUICK = {"clients": 300, "backlogs": [50, 4096], "deadline": 30.0}
BRIDGE_FLAGS = (
    *("--logon-free-failures", "1000", "--logon-address-max-pending", "100000"),
    *("--guard-limit", "0"),
)


def raise_nofile() -> int:
    """Raise the soft descriptor limit to the hard limit; the new soft limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Bridge:
    """``twistd -n smbridge`` with the descriptor limit raised (``preexec_fn``)."""

    def __init__(self, args: list[str], work: Path, name: str) -> None:
        self.log = (work / f"{name}.log").open("wb")
        self.proc = subprocess.Popen(
            [str(BIN / "twistd"), "-n", "--pidfile=", "-l", "-", *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=work,
            preexec_fn=raise_nofile,
        )

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


async def one_client(
    i: int,
    port: int,
    context: ssl.SSLContext,
    go: asyncio.Event,
    t0: list[float],
    stages: list[str],
) -> dict[str, Any]:
    """Connect, handshake, log on; the times from the storm's start (or the error)."""
    loop = asyncio.get_running_loop()
    user = {"user": f"agent{i % 50 + 1}", "password": "demo", "clientId": f"storm-{i}"}
    logon = encode(Kind.REQUEST, *c.CREATE_SESSION, 1, user)
    sock = socket.socket()
    sock.setblocking(False)
    await go.wait()
    try:
        stages[i] = "tcp"
        await loop.sock_connect(sock, ("127.0.0.1", port))
        tcp = time.monotonic() - t0[0]
        stages[i] = "tls"
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=context, server_hostname="localhost", ssl_handshake_timeout=120
        )
        tls = time.monotonic() - t0[0]
        stages[i] = "logon"
        writer.write(logon)
        data = b""
        while len(data) < frame_length(data):
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionError("closed by the bridge")
            data += chunk
        frame = decode_all(data[: frame_length(data)])[0]
        if frame.kind == Kind.ERROR:
            raise RuntimeError(f"error answer: {frame.body}")
        return {"tcp": tcp, "tls": tls, "back": time.monotonic() - t0[0], "writer": writer}
    except Exception as e:  # counted and sampled; the storm goes on
        sock.close()
        return {"error": repr(e)[:120]}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


async def storm(port: int, pid: int, n: int, ca: Path, deadline: float) -> dict[str, Any]:
    """All ``n`` clients at once against the bridge on ``port`` (process ``pid``)."""
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    go, t0, stages = asyncio.Event(), [0.0], ["start"] * n
    tasks = [asyncio.ensure_future(one_client(i, port, context, go, t0, stages)) for i in range(n)]
    await asyncio.sleep(0)  # every client waits on ``go``
    cpu0 = process_cpu(pid)
    t0[0] = time.monotonic()
    go.set()
    done, pending = await asyncio.wait(tasks, timeout=deadline)
    wall = time.monotonic() - t0[0]
    cpu = process_cpu(pid) - cpu0
    stuck: dict[str, int] = {}  # clients still waiting at the deadline, by stage
    for i, t in enumerate(tasks):
        if t in pending:
            stuck[stages[i]] = stuck.get(stages[i], 0) + 1
            t.cancel()
    results = [t.result() for t in done]
    ok = [r for r in results if "error" not in r]
    for r in ok:
        r["writer"].transport.abort()
    await asyncio.sleep(0.2)  # the aborts go out before the next case
    tcp = [r["tcp"] for r in ok]
    back = [r["back"] for r in ok]
    errors = [r["error"] for r in results if "error" in r]
    return {
        "clients": n,
        "back": len(ok),
        "errors": len(errors) + len(pending),
        "error_samples": sorted(set(errors))[:3],
        "stuck_at_deadline": stuck,
        "all_back_s": round(max(back), 3) if len(ok) == n else None,
        "wall_s": round(wall, 3),
        "tcp_max_s": round(max(tcp), 3) if tcp else None,
        "tcp_over_1s": sum(1 for t in tcp if t >= 1.0),
        "tcp_p99_s": percentile(tcp, 0.99),
        "back_p50_s": percentile(back, 0.5),
        "back_p99_s": percentile(back, 0.99),
        "bridge_cpu_s": round(cpu, 2),
        "logons_per_cpu_s": round(len(ok) / cpu) if cpu else None,
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    p: dict[str, Any] = dict(QUICK if args.quick else FULL)
    p["nofile"] = raise_nofile()
    if p["nofile"] < p["clients"] + 256:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {p['nofile']} too low for {p['clients']}")
    work = Path(tempfile.mkdtemp(prefix="smbridge-bench-storm-"))
    files = pki.ensure_site_pki(work / "pki")
    n_port, c_port = free_port(), free_port()
    notifier = Server("notifier", notifier_args(n_port, c_port, files), work)
    cases: dict[str, Any] = {}
    try:
        wait_for_port(c_port)
        for backlog in p["backlogs"]:
            port = free_port()
            flags = ("--backlog", str(backlog), "--name", f"storm{backlog}", *BRIDGE_FLAGS)
            bridge = Bridge(bridge_args(n_port, port, work, *flags), work, f"bridge-{backlog}")
            try:
                wait_for_port(port)
                wait_registered(f"http://127.0.0.1:{c_port}")
                r = asyncio.run(storm(port, bridge.proc.pid, p["clients"], files.ca, p["deadline"]))
            finally:
                bridge.stop()
            cases[f"backlog-{backlog}"] = r
            print(
                f"  backlog {backlog:5}: all back {r['all_back_s']} s, {r['back']}/{r['clients']}"
                f" back, TCP max {r['tcp_max_s']} s ({r['tcp_over_1s']} >= 1 s), bridge CPU "
                f"{r['bridge_cpu_s']} s, errors {r['errors']} {r['error_samples']} "
                f"stuck {r['stuck_at_deadline']}",
                flush=True,
            )
    finally:
        notifier.stop()
    results = {
        "params": p,
        "somaxconn": somaxconn(),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "started": time.time(),
        "cases": cases,
    }
    path = write_results("storm-quick" if args.quick else "storm", results)
    print(f"results: {path}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small, short run")
    main(parser.parse_args())
