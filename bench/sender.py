"""The sender: bandwidth limiting under load, and stalled readers among many sessions.

    python bench/sender.py            # writes bench/results/sender.json
    python bench/sender.py --quick    # small and short, to check that it works

Limiter (in process, on a Clock, so the figures are the scheduler's and not the
machine's): 50 client connections receive a mix of frames (10 % high, 30 %
medium, 60 % low by bytes) at 1x, 2x and 5x the configured total, for 30
intervals. Reported: bytes written per interval against the total, the p99
delay of high-priority frames, and CPU per frame (process time of the whole
send path) with the limiter on versus off at the same load.

Whole bridge (real processes: ``twistd notifier`` and ``twistd smbridge``, 100
clients over loopback watching one queue, the Notifier's traffic generator at 800
calls/s): the bridge process's CPU seconds per frame delivered with the limiter
off, then on with its total at twice the bytes per second the clients received
with it off (enabled, not limiting), then at exactly that (the load at 1x the
limit); three alternating rounds, 8 s windows after a 1 s warm-up, medians. The
in-process figure above isolates the send path, whose cost the limiter
multiplies; this one is what the limiter costs a bridge.

Stalled readers (real loopback sockets, real reactor): 1,000 clients connect to
a bridge client listener; the bridge fans a 2,000-byte frame out to all of them
every 10 ms; 1, 10 or 100 of them stop reading. Reported: the peak bytes the
bridge holds for sending (exact count, docs/sender.md), the peak resident size
during the run (sampled every 10 ms) against the size at its start, and the
delivery delay (p50, p99) seen by the clients that do read.
"""

from __future__ import annotations

import argparse
import resource
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import treq  # noqa: E402
from twisted.internet import defer, task  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint  # noqa: E402
from twisted.internet.protocol import Factory, Protocol  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402

from bench import fanout  # noqa: E402
from bench.common import (  # noqa: E402
    Counter,
    Server,
    bridge_args,
    free_port,
    notifier_args,
    request,
    wait_for_port,
    wait_registered,
    write_results,
)
from bench.heapclock import HeapClock  # noqa: E402
from smbridge import pki  # noqa: E402
from smbridge.codec import Kind, encode_raw  # noqa: E402
from smbridge.codec import catalog as cat  # noqa: E402
from smbridge.codec.catalog import GET_DIRECTORY, QUEUE_CHANGED, STATUS_CHANGED  # noqa: E402
from smbridge.sender import parameters as p  # noqa: E402
from smbridge.transports.batch import WriteBatcher  # noqa: E402
from smbridge.transports.connection import ClientConnectionFactory  # noqa: E402

TOTAL = 500_000
INTERVAL = 1.0
TICK = 0.01
FRAME = 2000  # bytes of each fanned-out frame in the stalled-readers run


class _Router:
    """What a connection needs from the router when nobody sends requests."""

    def connection_lost(self, conn: Any) -> None:
        pass


class _Sink:
    """A transport that records when bytes were written (on the simulated clock)."""

    def __init__(self, clock: Clock, log: list[tuple[float, bytes]]) -> None:
        self.clock = clock
        self.log = log
        self.producer: Any = None

    def write(self, data: bytes) -> None:
        self.log.append((self.clock.seconds(), data))

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def getPeer(self) -> str:
        return "sim"


def _frame(kind: int, message: tuple[int, int], size: int, sent_at: float) -> bytes:
    stamp = int(sent_at * 1000)
    payload = b'{"t":' + str(stamp).encode() + b',"p":"'
    payload += b"x" * (size - 14 - len(payload) - 2) + b'"}'
    return encode_raw(kind, message[0], message[1], stamp & 0xFFFFFFFF, payload)


def limiter_run(load: float, enabled: bool, intervals: int) -> dict[str, Any]:
    clock = HeapClock()  # schedules like the reactor; Clock's sort would dominate the CPU
    batcher = WriteBatcher(clock)
    factory = ClientConnectionFactory(_Router(), batcher)  # type: ignore[arg-type]
    if enabled:
        factory.sender.configure(
            {p.ENABLED: "Yes", p.TOTAL: str(TOTAL), p.INTERVAL: str(int(INTERVAL * 1000))}
        )
    log: list[tuple[float, bytes]] = []
    conns = []
    for _ in range(50):
        conn = factory.connection("clear")
        conn.makeConnection(_Sink(clock, log))  # type: ignore[arg-type]
        conns.append(conn)
    per_tick = TOTAL * load * TICK / INTERVAL
    mix = [
        (Kind.NOTIFICATION, STATUS_CHANGED, 200, 0.10),
        (Kind.RESPONSE, GET_DIRECTORY, 2000, 0.30),
        (Kind.NOTIFICATION, QUEUE_CHANGED, 600, 0.60),
    ]
    owed = [0.0, 0.0, 0.0]
    frames = 0
    ticks = int(intervals * INTERVAL / TICK)
    cpu = time.process_time()
    for _ in range(ticks):
        now = clock.seconds()
        for i, (kind, message, size, share) in enumerate(mix):
            owed[i] += per_tick * share
            while owed[i] >= size:
                owed[i] -= size
                conns[frames % len(conns)].send(_frame(kind, message, size, now))
                frames += 1
        clock.advance(TICK)
    clock.advance(0)
    cpu = time.process_time() - cpu
    per_interval = [0] * (intervals + 1)
    high_delays = []
    for at, data in log:
        per_interval[min(int(at / INTERVAL + 1e-9), intervals)] += len(data)
        pos = 0
        while pos < len(data):
            n = 4 + int.from_bytes(data[pos : pos + 4], "big")
            if data[pos + 6 : pos + 10] == bytes([0, 171, 0, 4]):
                sent = int.from_bytes(data[pos + 10 : pos + 14], "big") / 1000
                if sent >= 2 * INTERVAL:  # steady state: after the activation transient
                    high_delays.append(at - sent)
            pos += n
    steady = per_interval[2:intervals]  # the first intervals fill the queues
    high_delays.sort()
    return {
        "load": load,
        "limiter": enabled,
        "frames": frames,
        "cpuMicrosecondsPerFrame": round(cpu / frames * 1e6, 2),
        "bytesPerInterval": {
            "configured": TOTAL,
            "mean": round(statistics.mean(steady)),
            "min": min(steady),
            "max": max(steady),
            "worstDeviationPercent": round(max(abs(b - TOTAL) for b in steady) / TOTAL * 100, 2),
        },
        "highDelaySeconds": {
            "p50": round(high_delays[len(high_delays) // 2], 3),
            "p99": round(high_delays[int(len(high_delays) * 0.99)], 3),
        },
    }


class Reader(Protocol):
    def __init__(self, bench: Stalled, stalled: bool) -> None:
        self.bench = bench
        self.stalled = stalled
        self.buf = b""

    def connectionMade(self) -> None:
        if self.stalled:
            # A small receive window, so the bridge sees the stall within the run.
            sock = self.transport.getHandle()  # type: ignore[union-attr]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        now = time.monotonic()
        while len(self.buf) >= 4:
            n = 4 + int.from_bytes(self.buf[:4], "big")
            if len(self.buf) < n:
                break
            sent = int.from_bytes(self.buf[10:14], "big") / 1e4
            self.bench.delays.append(now - sent)
            self.buf = self.buf[n:]


def _rss_kb() -> int:
    """The process's resident size now (Linux), in KiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() // 1024


class Stalled:
    def __init__(self) -> None:
        self.delays: list[float] = []


@defer.inlineCallbacks
def stalled_run(reactor: Any, sessions: int, stalled: int, seconds: float) -> Any:
    batcher = WriteBatcher(reactor)
    factory = ClientConnectionFactory(_Router(), batcher)  # type: ignore[arg-type]
    factory.protocol = None  # type: ignore[attr-defined]
    factory.buildProtocol = lambda addr: factory.connection("clear")  # type: ignore[method-assign]
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    bench = Stalled()
    clients = []
    for i in range(sessions):
        reader = Reader(bench, i < stalled)
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            Factory.forProtocol(lambda reader=reader: reader)
        )
        clients.append(reader)
    yield task.deferLater(reactor, 0.2, lambda: None)
    bench.delays.clear()
    peak_held = 0
    start_rss = peak_rss = _rss_kb()
    base = time.monotonic()
    end = base + seconds
    body = b'{"p":"' + b"x" * (FRAME - 22) + b'"}'
    while time.monotonic() < end:
        stamp = int((time.monotonic() - base) * 1e4) + int(base * 1e4)
        frame = encode_raw(Kind.NOTIFICATION, *QUEUE_CHANGED, stamp & 0xFFFFFFFF, body)
        for conn in list(factory.connections):
            conn.send(frame)
        peak_held = max(peak_held, factory.sender.held_bytes(factory.connections))
        peak_rss = max(peak_rss, _rss_kb())
        yield task.deferLater(reactor, 0.01, lambda: None)
    delays = sorted(bench.delays)
    for reader in clients:
        reader.transport.abortConnection()  # type: ignore[union-attr]
    yield port.stopListening()
    yield task.deferLater(reactor, 0.2, lambda: None)
    return {
        "sessions": sessions,
        "stalled": stalled,
        "seconds": seconds,
        "peakHeldBytes": peak_held,
        "rssKbAtStart": start_rss,
        "peakRssKb": peak_rss,
        "readersDelaySeconds": {
            "p50": round(delays[len(delays) // 2], 4) if delays else None,
            "p99": round(delays[int(len(delays) * 0.99)], 4) if delays else None,
        },
        "framesDelivered": len(delays),
    }


SAMPLE = 10  # clients that parse frames; the others count bytes (same stream)


@defer.inlineCallbacks
def _window(reactor: Any, counters: list[Counter], seconds: float, procs: list[Any]) -> Any:
    sample = counters[:SAMPLE]
    yield task.deferLater(reactor, 1.0, lambda: None)  # warm up
    b0 = sum(x.bytes for x in counters)
    sf0, sb0 = sum(x.frames for x in sample), sum(x.bytes for x in sample)
    cpu0 = [p.cpu_seconds() for p in procs]
    t0 = time.monotonic()
    yield task.deferLater(reactor, seconds, lambda: None)
    t1 = time.monotonic()
    b1 = sum(x.bytes for x in counters)
    sf1, sb1 = sum(x.frames for x in sample), sum(x.bytes for x in sample)
    cpu1 = [p.cpu_seconds() for p in procs]
    frames_per_byte = (sf1 - sf0) / max(1, sb1 - sb0)
    rate = (b1 - b0) * frames_per_byte / (t1 - t0)
    cpu = cpu1[0] - cpu0[0]
    return {
        "rate": rate,
        "per_cpu_s": round(rate * (t1 - t0) / cpu) if cpu > 0 else None,
        "frame_bytes": round(1 / frames_per_byte, 1) if frames_per_byte else None,
        "cpu": [round(b - a, 2) for a, b in zip(cpu0, cpu1, strict=True)],
        "seconds": round(t1 - t0, 2),
    }


@defer.inlineCallbacks
def _bridge_phase(
    reactor: Any, control: str, counters: list[Any], seconds: float, procs: list[Any], **params: str
) -> Any:
    """Set the limiter's parameters at the Notifier, settle, and measure one window."""
    response = yield treq.post(f"{control}/api/parameters", json=params)
    yield response.content()
    result = yield _window(reactor, counters, seconds, procs)
    frames = result["rate"] * result["seconds"]
    result["frames"] = round(frames)
    result["bytesPerSecond"] = round(result["rate"] * (result["frame_bytes"] or 0))
    result["bridgeCpuMicrosecondsPerFrame"] = round(result["cpu"][0] / max(frames, 1) * 1e6, 2)
    return result


@defer.inlineCallbacks
def bridge_cpu(reactor: Any, quick: bool) -> Any:
    """The bridge process's CPU per delivered frame, limiter off, on at 1x, on at 0.5x."""
    work = Path(tempfile.mkdtemp(prefix="smbridge-bench-sender-"))
    files = pki.ensure_site_pki(work / "pki")
    n_port, c_port, b_port = free_port(), free_port(), free_port()
    control = f"http://127.0.0.1:{c_port}"
    notifier = Server("notifier", notifier_args(n_port, c_port, files), work)
    bridge = Server("bridge", bridge_args(n_port, b_port, work, "--allow-cleartext"), work)
    # Quick: enough work in each window (over 1,000 frames, several 10 ms CPU ticks) that
    # the CPU clock never reads 0 (at 50 calls per second over 1 s it once did).
    clients, cps, seconds = (10, 200.0, 2.0) if quick else (100, 800.0, 8.0)
    try:
        wait_for_port(c_port)
        wait_for_port(b_port)
        yield wait_registered(reactor, control)
        yield treq.post(f"{control}/api/traffic", json={"callsPerSecond": 0})

        def make(i: int) -> Any:
            script = [
                request(cat.CREATE_SESSION, {"user": f"agent{i % 50 + 1}", "password": "demo"}),
                request(cat.WATCH_QUEUE, {"queue": "Sales"}, rid=2),
            ]
            return Counter(script, count_frames=i < SAMPLE)

        counters = yield fanout._connect_all(reactor, b_port, make, clients)
        for counter in counters:
            counter.start()
        yield treq.post(f"{control}/api/traffic", json={"callsPerSecond": cps})
        procs = [bridge]
        rounds: list[dict[str, Any]] = []
        total = 0
        for _ in range(1 if quick else 3):  # alternating, so drift hits every phase
            off = yield _bridge_phase(
                reactor, control, counters, seconds, procs, **{p.ENABLED: "No"}
            )
            total = total or max(50_001, off["bytesPerSecond"])  # the parameter's floor
            # Under the limit first: at the limit a backlog builds, which the next
            # round's "off" releases during its warm-up, outside every window.
            under = yield _bridge_phase(
                reactor,
                control,
                counters,
                seconds,
                procs,
                **{p.ENABLED: "Yes", p.TOTAL: str(2 * total), p.INTERVAL: "1000"},
            )
            at_limit = yield _bridge_phase(
                reactor, control, counters, seconds, procs, **{p.TOTAL: str(total)}
            )
            rounds.append({"off": off, "atLimit": at_limit, "underLimit": under})
        yield treq.post(f"{control}/api/traffic", json={"callsPerSecond": 0})
        for counter in counters:
            counter.transport.loseConnection()
    finally:
        bridge.stop()
        notifier.stop()

    def median(phase: str) -> float:
        return float(statistics.median(r[phase]["bridgeCpuMicrosecondsPerFrame"] for r in rounds))

    base = median("off")
    return {
        "clients": clients,
        "callsPerSecond": cps,
        "totalBytesPerInterval": total,
        "rounds": rounds,
        "cpuMicrosecondsPerFrame": {
            "off": base,
            "onAtLimit": median("atLimit"),
            "onUnderLimit": median("underLimit"),
        },
        # None when the window was too short for the CPU clock (10 ms ticks) to see any
        # work: the quick mode's one-second windows can read 0.
        "onAtLimitOverOff": round(median("atLimit") / base, 2) if base else None,
        "onUnderLimitOverOff": round(median("underLimit") / base, 2) if base else None,
    }


@defer.inlineCallbacks
def main(reactor: Any, quick: bool) -> Any:
    # Stalled readers first: the limiter runs leave the heap large, which would hide
    # the memory figures.
    stalls = []
    sessions = 100 if quick else 1000
    for stalled in (1, 10, 100):
        result = yield stalled_run(
            reactor, sessions, min(stalled, sessions // 2), 1.0 if quick else 5.0
        )
        stalls.append(result)
        print(
            f"{result['stalled']} stalled of {sessions}: peak held {result['peakHeldBytes']} B, "
            f"readers' delay p99 {result['readersDelaySeconds']['p99']} s"
        )
    intervals = 6 if quick else 30
    limiter = []
    for load in (1.0, 2.0, 5.0):
        # CPU: the best of three runs each, alternating, so drift hits both.
        runs_on, runs_off = [], []
        for _ in range(3):
            runs_on.append(limiter_run(load, True, intervals))
            runs_off.append(limiter_run(load, False, intervals))
        on = min(runs_on, key=lambda r: r["cpuMicrosecondsPerFrame"])
        off = min(runs_off, key=lambda r: r["cpuMicrosecondsPerFrame"])
        on["cpuMicrosecondsPerFrameOff"] = off["cpuMicrosecondsPerFrame"]
        on["cpuOnOverOff"] = round(
            on["cpuMicrosecondsPerFrame"] / off["cpuMicrosecondsPerFrame"], 2
        )
        limiter.append(on)
        print(
            f"load {load:g}x: bytes/interval mean {on['bytesPerInterval']['mean']} "
            f"(worst {on['bytesPerInterval']['worstDeviationPercent']} % off {TOTAL}), "
            f"high p99 {on['highDelaySeconds']['p99']} s, "
            f"CPU/frame on/off {on['cpuOnOverOff']}"
        )
    whole = yield bridge_cpu(reactor, quick)
    off_us = whole["cpuMicrosecondsPerFrame"]["off"]
    print(
        f"whole bridge, CPU per delivered frame: off {off_us} us, "
        f"on at the limit {whole['onAtLimitOverOff']}x, on under it {whole['onUnderLimitOverOff']}x"
    )
    path = write_results(
        "sender-quick" if quick else "sender",
        {"limiter": limiter, "stalledReaders": stalls, "wholeBridge": whole, "quick": quick},
    )
    print(f"results: {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    task.react(main, [args.quick])
