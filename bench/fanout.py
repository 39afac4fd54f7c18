"""QueueChanged deliveries per second to many watching sessions.

Through the bridge: N clients log on, watch ``queue:Sales``, and the Notifier's
traffic generator is turned up until the bridge is the bottleneck. Reference:
``minimal_fanout.py`` writes the very frames the bridge delivered (captured from
a sample client) to the same number of connections. Both over clear-text TCP on
loopback, so that the figure is the fan-out machinery and not OpenSSL.

All clients receive the same stream, so only a sample parses frames; the rest
count bytes, and deliveries are bytes times the sample's frames per byte.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import treq
from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory

from bench.common import Counter, request
from smbridge.codec import catalog as c

SAMPLE = 10


class Capturing(Counter):
    """A counter that also keeps the first frames it counts (the reference replays them)."""

    def __init__(self, *args: Any, keep: int = 300, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.keep = keep
        self.kept: list[bytes] = []
        self._raw = b""

    def dataReceived(self, data: bytes) -> None:
        if not self._scripted and self.running and len(self.kept) < self.keep:
            self._raw += data
            while len(self._raw) >= 4:
                n = 4 + int.from_bytes(self._raw[:4], "big")
                if len(self._raw) < n:
                    break
                self.kept.append(self._raw[:n])
                self._raw = self._raw[n:]
        super().dataReceived(data)


@defer.inlineCallbacks
def _connect_all(reactor: Any, port: int, make: Any, count: int) -> Any:
    counters = []
    for i in range(count):
        counter = make(i)
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(lambda counter=counter: counter)
        )
        counters.append(counter)
    yield defer.gatherResults([x.ready for x in counters])
    return counters


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
    return {
        "rate": (b1 - b0) * frames_per_byte / (t1 - t0),
        "frame_bytes": round(1 / frames_per_byte, 1) if frames_per_byte else None,
        "cpu": [round(b - a, 2) for a, b in zip(cpu0, cpu1, strict=True)],
        "seconds": round(t1 - t0, 2),
    }


@defer.inlineCallbacks
def through_bridge(
    reactor: Any,
    port: int,
    control: str,
    clients: int,
    cps: float,
    seconds: float,
    procs: list[Any],
    frames_file: Path,
) -> Any:
    yield treq.post(f"{control}/api/traffic", json={"callsPerSecond": 0})

    def make(i: int) -> Counter:
        script = [
            request(c.CREATE_SESSION, {"user": f"agent{i % 50 + 1}", "password": "demo"}),
            request(c.WATCH_QUEUE, {"queue": "Sales"}, rid=2),
        ]
        cls = Capturing if i < SAMPLE else Counter
        return cls(script, count_frames=i < SAMPLE)

    counters = yield _connect_all(reactor, port, make, clients)
    for counter in counters:
        counter.start()
    response = yield treq.post(f"{control}/api/traffic", json={"callsPerSecond": cps})
    yield response.content()
    result = yield _window(reactor, counters, seconds, procs)
    yield treq.post(f"{control}/api/traffic", json={"callsPerSecond": 0})
    kept = [f for f in counters[0].kept if f[10:14] == b"\0\0\0\0"]
    frames_file.write_bytes(b"".join(kept))
    result["captured_frames"] = len(kept)
    for counter in counters:
        counter.transport.loseConnection()
    return result


@defer.inlineCallbacks
def reference(reactor: Any, port: int, clients: int, seconds: float, procs: list[Any]) -> Any:
    counters = yield _connect_all(
        reactor, port, lambda i: Counter([], count_frames=i < SAMPLE), clients
    )
    for counter in counters:
        counter.start()
    result = yield _window(reactor, counters, seconds, procs)
    for counter in counters:
        counter.transport.loseConnection()
    return result


def describe(result: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in result.items() if k != "cpu"})
