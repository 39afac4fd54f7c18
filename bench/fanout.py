"""QueueChanged deliveries per CPU second to many watching sessions, at saturation.

Through the bridge: N clients log on and watch ``queue:Sales``, and the Notifier's
traffic generator is turned up until the bridge is the bottleneck. Reference:
``minimal_fanout.py``, registered on the same Notifier, subscribes to the same topic
once its N plain clients are connected and writes every upstream read's events,
joined, to each client in one write. Both over clear-text TCP on loopback to the
clients, so that the figure is the fan-out machinery and not OpenSSL; both read the
Notifier over TLS. The figure compared is deliveries per CPU second of the server
process (``per_cpu_s``), rounds alternating between the two.

All clients receive the same stream, so only a sample parses frames; the rest
count bytes, and deliveries are bytes times the sample's frames per byte.
"""

from __future__ import annotations

import json
import time
from typing import Any

import treq
from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory

from bench.common import Counter, request
from smbridge.codec import catalog as c

SAMPLE = 10


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
def _measure(
    reactor: Any,
    control: str,
    counters: list[Counter],
    cps: float,
    seconds: float,
    procs: list[Any],
    goodbye: bytes = b"",
) -> Any:
    """Traffic on, the window, traffic off, clients closed (the server lets the topic go)."""
    for counter in counters:
        counter.start()
    response = yield treq.post(f"{control}/api/traffic", json={"callsPerSecond": cps})
    yield response.content()
    try:
        result = yield _window(reactor, counters, seconds, procs)
    finally:
        response = yield treq.post(f"{control}/api/traffic", json={"callsPerSecond": 0})
        yield response.content()
        for counter in counters:
            if goodbye:  # log off: a lingering session would still be sent every event
                counter.transport.write(goodbye)
            counter.transport.loseConnection()
    return result


@defer.inlineCallbacks
def through_bridge(
    reactor: Any,
    port: int,
    control: str,
    clients: int,
    cps: float,
    seconds: float,
    procs: list[Any],
) -> Any:
    """N sessions log on and watch queue:Sales; ``procs[0]`` is the bridge."""

    def make(i: int) -> Counter:
        script = [
            request(c.CREATE_SESSION, {"user": f"agent{i % 50 + 1}", "password": "demo"}),
            request(c.WATCH_QUEUE, {"queue": "Sales"}, rid=2),
        ]
        return Counter(script, count_frames=i < SAMPLE)

    counters = yield _connect_all(reactor, port, make, clients)
    goodbye = request(c.DESTROY_SESSION, {}, rid=3)
    result = yield _measure(reactor, control, counters, cps, seconds, procs, goodbye)
    return result


@defer.inlineCallbacks
def reference(
    reactor: Any,
    port: int,
    control: str,
    clients: int,
    cps: float,
    seconds: float,
    procs: list[Any],
) -> Any:
    """N plain clients on minimal_fanout.py (``procs[0]``), which then subscribes."""
    counters = yield _connect_all(
        reactor, port, lambda i: Counter([], count_frames=i < SAMPLE), clients
    )
    result = yield _measure(reactor, control, counters, cps, seconds, procs)
    return result


def describe(result: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in result.items() if k != "cpu"})
