"""Round trips over the WebSocket tunnel versus the TLS listener versus websockify.

    python bench/tunnel.py            # full run (about two minutes)
    python bench/tunnel.py --quick    # small and short, to check that it works
    python bench/tunnel.py --rounds 2 # fewer rounds (about a minute and a half)

One bridge process serves every path in the same run: its TLS listener (and the same
port in clear text, for reference), its ws and wss tunnel, and, for the out-of-process
design, websockify (PyPI) relaying ws to the bridge's clear-text listener. A second
bridge runs with ``AUTOBAHN_USE_NVX=0`` to show what Autobahn's native extension is
worth, for small requests and for 96 KiB ones. Each client logs on, then keeps
``window`` Heartbeat requests in flight (the bridge answers them itself, so the figures
are about the transport, not the Notifier). Rounds alternate between paths so that
drift on the machine hits them all; per path the median round is reported with its
p50/p99 latency, the CPU seconds of every server process (websockify counts its
per-connection children) and that CPU per round trip, which a busy machine disturbs
less than the rate, and round trips per bridge CPU second over ws and wss against the
TLS listener's (``ws_per_cpu_vs_tls``, ``wss_per_cpu_vs_tls``). First, memory: the
bridge's resident size per idle logged-on session over wss, TLS and ws (``idle``: the
growth from the first tenth of 1,000 sessions to all of them, per session added).
Results go to bench/results/tunnel.json (tunnel-quick.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from struct import Struct
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import treq  # noqa: E402
from twisted.internet import defer, task  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS  # noqa: E402
from twisted.internet.protocol import Factory, Protocol  # noqa: E402

from bench.common import (  # noqa: E402
    BIN,
    Server,
    bridge_args,
    free_port,
    notifier_args,
    wait_for_port,
    write_results,
)
from smbridge import pki  # noqa: E402
from smbridge.codec import Kind, encode  # noqa: E402
from smbridge.codec import catalog as c  # noqa: E402

FULL = {
    "conns": 20,
    "window": 8,
    "seconds": 2.5,
    "rounds": 5,
    "warmup": 0.5,
    "large_bytes": 96 * 1024,
    "large_conns": 4,
    "large_window": 2,
}
QUICK = {**FULL, "conns": 4, "window": 2, "seconds": 0.5, "rounds": 1, "warmup": 0.2}
FULL["idle_sessions"], QUICK["idle_sessions"] = 1000, 60
IDLE_PATHS = ("wss", "tls", "ws")
PATHS = ("tls", "tcp", "ws", "wss", "websockify", "ws-no-nvx", "ws-large", "ws-large-no-nvx")
_U32 = Struct(">I")
_RID = Struct(">I")


def process_cpu(pid: int) -> float:
    """User+system CPU seconds of a process, its live descendants and its reaped children."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        fields = stats.get(p)
        if fields is None:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        todo.extend(children.get(p, []))
    return total / ticks


class Proc:
    """A server subprocess for CPU accounting (twistd via bench.common.Server, or any)."""

    def __init__(self, name: str, pid: int) -> None:
        self.name = name
        self.pid = pid

    def cpu_seconds(self) -> float:
        return process_cpu(self.pid)


class Driver(Protocol):
    """One client connection: logs on, then keeps ``window`` Heartbeats in flight.

    ``ws`` speaks WebSocket itself (handshake, masked frames with a zero key, one
    message per request), so the client side costs the same on every path.
    """

    def __init__(
        self,
        user: int,
        window: int,
        ws_path: str | None,
        latencies: list[float],
        body: dict[str, Any] | None = None,
    ):
        self.user = user
        self.body = body or {}
        self.window = window
        self.ws_path = ws_path
        self.latencies = latencies
        self.ready: defer.Deferred[Driver] = defer.Deferred()
        self.running = False
        self.count = 0
        self.errors = 0
        self.sent: dict[int, float] = {}
        self.next_id = 2
        self._stream = b""
        self._ws_buf = b""
        self._handshaken = ws_path is None
        self._logged_on = False

    # --- writing ------------------------------------------------------------------
    def _wrap(self, frame: bytes) -> bytes:
        if self.ws_path is None:
            return frame
        n = len(frame)
        if n < 126:
            head = bytes((0x82, 0x80 | n))
        elif n < 65536:
            head = bytes((0x82, 0x80 | 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((0x82, 0x80 | 127)) + n.to_bytes(8, "big")
        return head + b"\x00\x00\x00\x00" + frame  # mask key 0: the payload is unchanged

    def connectionMade(self) -> None:
        if self.ws_path is not None:
            self.transport.write(  # type: ignore[union-attr]
                (
                    f"GET {self.ws_path} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\nININ-Client-Type: bench\r\n\r\n"
                ).encode()
            )
        else:
            self._logon()

    def _logon(self) -> None:
        body = {"user": f"agent{self.user % 50 + 1}", "password": "demo"}
        body["clientId"] = f"bench-{id(self)}"
        self.transport.write(self._wrap(encode(Kind.REQUEST, *c.CREATE_SESSION, 1, body)))  # type: ignore[union-attr]

    def start(self) -> None:
        self.running = True
        self._send(self.window)

    def _send(self, n: int) -> None:
        now = time.perf_counter()
        out = []
        for _ in range(n):
            rid = self.next_id
            self.next_id += 1
            self.sent[rid] = now
            out.append(self._wrap(encode(Kind.REQUEST, *c.HEARTBEAT, rid, self.body)))
        self.transport.write(b"".join(out))  # type: ignore[union-attr]

    # --- reading ------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        if self.ws_path is None:
            self._stream_bytes(data)
            return
        buf = self._ws_buf + data
        if not self._handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self._ws_buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(f"handshake refused: {buf[:80]!r}")
            self._handshaken = True
            buf = buf[end + 4 :]
            self._logon()
        payloads, pos, end = [], 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1] & 0x7F
            head = 2
            if b1 == 126:
                if end - pos < 4:
                    break
                b1, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif b1 == 127:
                if end - pos < 10:
                    break
                b1, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if end - pos < head + b1:
                break
            payload = buf[pos + head : pos + head + b1]
            opcode = b0 & 0x0F
            if opcode in (0, 2):
                payloads.append(payload)
            elif opcode == 9:  # ping: answer with a masked pong
                n = len(payload)
                self.transport.write(bytes((0x8A, 0x80 | n)) + b"\0\0\0\0" + payload)  # type: ignore[union-attr]
            pos += head + b1
        self._ws_buf = buf[pos:]
        if payloads:
            self._stream_bytes(b"".join(payloads))

    def _stream_bytes(self, data: bytes) -> None:
        buf = self._stream + data if self._stream else data
        pos, end, answered = 0, len(buf), 0
        now = time.perf_counter()
        while end - pos >= 14:
            length = _U32.unpack_from(buf, pos)[0]
            if pos + 4 + length > end:
                break
            if buf[pos + 5] == Kind.ERROR:
                self.errors += 1
            rid = _RID.unpack_from(buf, pos + 10)[0]
            if rid == 1 and not self._logged_on:
                self._logged_on = True
                self.ready.callback(self)
            else:
                sent = self.sent.pop(rid, None)
                if sent is not None:
                    answered += 1
                    if self.running:
                        self.latencies.append(now - sent)
            pos += 4 + length
        self._stream = buf[pos:]
        if answered:
            self.count += answered
            if self.running:
                self._send(answered)


@defer.inlineCallbacks
def measure(
    reactor: Any,
    path: str,
    port: int,
    tls: Any,
    p: dict[str, Any],
    procs: list[Any],
    pad: int = 0,
) -> Any:
    """One round on one path: connect and log on, warm up, then count for ``seconds``.

    With ``pad`` each request carries that many bytes more (a 64-bit-length frame past
    64 KiB, which goes through Autobahn's general parser and its XOR masker).
    """
    ws_path = None if path in ("tls", "tcp") else "/extra/cic1/session"
    latencies: list[float] = []
    body = {"pad": "x" * pad} if pad else None
    conns, window = (p["large_conns"], p["large_window"]) if pad else (p["conns"], p["window"])
    drivers = [Driver(i, window, ws_path, latencies, body) for i in range(conns)]
    for driver in drivers:
        endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        if tls is not None:
            endpoint = wrapClientTLS(tls, endpoint)
        yield endpoint.connect(Factory.forProtocol(lambda d=driver: d))
    yield defer.gatherResults([d.ready for d in drivers])
    for driver in drivers:
        driver.start()
    yield task.deferLater(reactor, p["warmup"], lambda: None)
    latencies.clear()
    n0, t0 = sum(d.count for d in drivers), time.monotonic()
    cpu0 = [x.cpu_seconds() for x in procs]
    own0 = os.times()
    yield task.deferLater(reactor, p["seconds"], lambda: None)
    n1, t1 = sum(d.count for d in drivers), time.monotonic()
    cpu1 = [x.cpu_seconds() for x in procs]
    own1 = os.times()
    window = sorted(latencies)
    for driver in drivers:
        driver.running = False
        driver.transport.loseConnection()  # type: ignore[union-attr]
    yield task.deferLater(reactor, 0.2, lambda: None)  # let the bridge see the closes
    return {
        "rate": (n1 - n0) / (t1 - t0),
        "p50_ms": round(1000 * window[len(window) // 2], 3) if window else None,
        "p99_ms": round(1000 * window[int(len(window) * 0.99)], 3) if window else None,
        "errors": sum(d.errors for d in drivers),
        "seconds": round(t1 - t0, 2),
        "cpu": {x.name: round(b - a, 2) for x, a, b in zip(procs, cpu0, cpu1, strict=True)},
        "driver_cpu": round((own1.user + own1.system) - (own0.user + own0.system), 2),
    }


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@defer.inlineCallbacks
def idle_memory(reactor: Any, plan: dict[str, Any], count: int, pid: int) -> Any:
    """Bridge memory per idle logged-on session, per path: the resident size's growth
    from the first tenth of ``count`` sessions to all of them, over the sessions added.

    Paths are measured one after the other with every earlier session still open (so
    nothing lingers or is freed meanwhile); then all are closed.
    """
    out: dict[str, Any] = {}
    everyone: list[Driver] = []
    for path in IDLE_PATHS:
        port, tls, _ = plan[path]
        ws_path = None if path in ("tls", "tcp") else "/extra/cic1/session"
        drivers = [Driver(1000 + i, 0, ws_path, []) for i in range(count)]
        batch = max(1, count // 10)  # the baseline is read after the first batch
        rss0 = 0
        for start in range(0, count, batch):
            if start == batch:
                yield task.deferLater(reactor, 0.3, lambda: None)
                rss0 = rss_kb(pid)
            # Ten logons at a time: more from one address at once would be throttled
            # (docs/protocol.md, logon-throttled: attempts count until they succeed).
            for at in range(start, min(count, start + batch), 10):
                some = drivers[at : min(at + 10, start + batch)]
                for driver in some:
                    endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
                    if tls is not None:
                        endpoint = wrapClientTLS(tls, endpoint)
                    yield endpoint.connect(Factory.forProtocol(lambda d=driver: d))
                yield defer.gatherResults([d.ready for d in some])
        yield task.deferLater(reactor, 0.3, lambda: None)  # the last writes settle
        added = count - batch
        out[path] = {
            "sessions": count,
            "kb_per_idle_session": round((rss_kb(pid) - rss0) / added, 1) if added else None,
            "errors": sum(d.errors for d in drivers),
        }
        everyone += drivers
        print(f"  idle {path:5} {out[path]['kb_per_idle_session']} KB per session", flush=True)
    for driver in everyone:
        driver.transport.loseConnection()  # type: ignore[union-attr]
    yield task.deferLater(reactor, 0.5, lambda: None)
    return out


@defer.inlineCallbacks
def wait_registered(reactor: Any, control: str, count: int, deadline: float = 30.0) -> Any:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            response = yield treq.get(f"{control}/api/state")
            state = yield response.json()
            if len(state.get("bridges") or []) >= count:
                return state
        except Exception:
            pass
        yield task.deferLater(reactor, 0.1, lambda: None)
    raise TimeoutError("the bridges did not register with the Notifier")


def _bridge(name: str, work: Path, n_port: int, ports: dict[str, int], env: dict[str, str]) -> Any:
    # Later flags win: the tunnel's own ports replace bridge_args' "off".
    args = bridge_args(
        n_port, ports["tls"], work, "--name", name, "--allow-cleartext",
        "--ws-port", str(ports["ws"]), "--wss-port", str(ports["wss"]),
    )  # fmt: skip
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return Server(name, args, work)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@defer.inlineCallbacks
def main(reactor: Any, args: argparse.Namespace) -> Any:
    import autobahn.websocket

    p = dict(QUICK if args.quick else FULL)
    if args.rounds:
        p["rounds"] = args.rounds
    work = Path(tempfile.mkdtemp(prefix="smbridge-bench-tunnel-"))
    files = pki.ensure_site_pki(work / "pki")
    n_port, c_port = free_port(), free_port()
    control = f"http://127.0.0.1:{c_port}"
    ports = {"tls": free_port(), "ws": free_port(), "wss": free_port()}
    slow = {"tls": free_port(), "ws": free_port(), "wss": free_port()}
    relay_port = free_port()
    notifier = Server("notifier", notifier_args(n_port, c_port, files), work)
    bridge = _bridge("bridge", work, n_port, ports, {})
    no_nvx = _bridge("bridge-no-nvx", work, n_port, slow, {"AUTOBAHN_USE_NVX": "0"})
    relay_log = (work / "websockify.log").open("wb")
    relay = __import__("subprocess").Popen(
        [str(BIN / "websockify"), f"127.0.0.1:{relay_port}", f"127.0.0.1:{ports['tls']}"],
        stdout=relay_log,
        stderr=relay_log,
        cwd=work,
    )
    results: dict[str, Any] = {
        "params": p,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "autobahn_uses_nvx": bool(autobahn.websocket.USES_NVX),
        "started": time.time(),
        "request": "Heartbeat (168,3), answered by the bridge",
    }
    try:
        for port in (c_port, ports["tls"], ports["ws"], ports["wss"], slow["ws"], relay_port):
            wait_for_port(port)
        yield wait_registered(reactor, control, 2)
        yield treq.post(f"{control}/api/traffic", json={"callsPerSecond": 0})
        tls = pki.client_options("localhost", files.ca)
        b, s = Proc("bridge", bridge.proc.pid), Proc("bridge-no-nvx", no_nvx.proc.pid)
        w = Proc("websockify", relay.pid)
        plan = {
            "tls": (ports["tls"], tls, [b]),
            "tcp": (ports["tls"], None, [b]),
            "ws": (ports["ws"], None, [b]),
            "wss": (ports["wss"], tls, [b]),
            "websockify": (relay_port, None, [b, w]),
            "ws-no-nvx": (slow["ws"], None, [s]),
            "ws-large": (ports["ws"], None, [b]),
            "ws-large-no-nvx": (slow["ws"], None, [s]),
        }
        results["idle"] = yield idle_memory(reactor, plan, p["idle_sessions"], bridge.proc.pid)
        rounds: dict[str, list[Any]] = {path: [] for path in PATHS}
        for _ in range(p["rounds"]):
            for path in PATHS:
                port, options, procs = plan[path]
                pad = p["large_bytes"] if "large" in path else 0
                r = yield measure(reactor, path, port, options, p, procs, pad)
                rounds[path].append(r)
                print(f"  {path:15} {r['rate']:9.0f}/s  p99 {r['p99_ms']} ms  cpu {r['cpu']}")
        summary = {}
        for path, rs in rounds.items():
            best = sorted(rs, key=lambda r: r["rate"])[len(rs) // 2]
            summary[path] = {
                "rate": round(statistics.median(r["rate"] for r in rs)),
                "p50_ms": best["p50_ms"],
                "p99_ms": best["p99_ms"],
                "cpu": best["cpu"],
                # server CPU per round trip, in microseconds: robust to a busy machine
                "cpu_us_per_round_trip": {
                    name: round(cpu / (best["rate"] * best["seconds"]) * 1e6, 2)
                    for name, cpu in best["cpu"].items()
                },
                "driver_cpu": best["driver_cpu"],
                "errors": sum(r["errors"] for r in rs),
            }
        tls_rate = summary["tls"]["rate"]
        results["rounds"] = rounds
        results["summary"] = summary
        results["ratios"] = {
            "ws_vs_tls": round(summary["ws"]["rate"] / tls_rate, 3),
            "ws_vs_tcp": round(summary["ws"]["rate"] / summary["tcp"]["rate"], 3),
            "wss_vs_tls": round(summary["wss"]["rate"] / tls_rate, 3),
            "wss_vs_websockify": round(summary["wss"]["rate"] / summary["websockify"]["rate"], 3),
            "ws_vs_websockify": round(summary["ws"]["rate"] / summary["websockify"]["rate"], 3),
            "nvx_speedup_ws": round(summary["ws"]["rate"] / summary["ws-no-nvx"]["rate"], 3),
            "nvx_speedup_ws_large": round(
                summary["ws-large"]["rate"] / summary["ws-large-no-nvx"]["rate"], 3
            ),
        }
        # Round trips per bridge CPU second against the TLS listener's (target >= 0.8).
        us = {k: summary[k]["cpu_us_per_round_trip"]["bridge"] for k in ("tls", "ws", "wss")}
        for path in ("ws", "wss"):
            ratio = round(us["tls"] / us[path], 3) if us[path] else None
            results["ratios"][f"{path}_per_cpu_vs_tls"] = ratio
    finally:
        relay.terminate()
        relay.wait(10)
        relay_log.close()
        no_nvx.stop()
        bridge.stop()
        notifier.stop()
    path = write_results("tunnel-quick" if args.quick else "tunnel", results)
    for name, row in results["summary"].items():
        print(
            f"{name:15} {row['rate']:8d} round trips/s  p50 {row['p50_ms']} ms  "
            f"p99 {row['p99_ms']} ms  cpu {row['cpu']}  us/rt {row['cpu_us_per_round_trip']}"
        )
    print(json.dumps(results["ratios"]))
    print(f"results: {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small, short run")
    parser.add_argument("--rounds", type=int, default=0, help="rounds per path (default 5)")
    task.react(main, [parser.parse_args()])
