"""Heartbeats answered per CPU second: the bridge against a bare responder.

Through the bridge: ``conns`` clear-text clients log on, then each keeps ``window``
Heartbeat requests open, sending one for every answer. The bridge answers a
Heartbeat itself (no Notifier round trip), so this is the bridge's per-request
cost: decode, route, the session's touch, encode, the write path. Reference:
``minimal_responder.py`` answers the same requests with the same bytes, one write
per read. Figure: answers per CPU second of the server process (``per_cpu_s``).
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory

from bench.common import Counter, request
from smbridge.codec import catalog as c

HEARTBEAT = request(c.HEARTBEAT, {}, rid=7)


@defer.inlineCallbacks
def _measure(
    reactor: Any,
    port: int,
    counters: list[Counter],
    seconds: float,
    procs: list[Any],
    goodbye: bytes = b"",
) -> Any:
    for counter in counters:
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(lambda counter=counter: counter)
        )
    yield defer.gatherResults([x.ready for x in counters])
    for counter in counters:
        counter.start()
    try:
        yield task.deferLater(reactor, 0.5, lambda: None)  # warm up
        f0, t0, cpu0 = sum(x.frames for x in counters), time.monotonic(), procs[0].cpu_seconds()
        yield task.deferLater(reactor, seconds, lambda: None)
        f1, t1, cpu1 = sum(x.frames for x in counters), time.monotonic(), procs[0].cpu_seconds()
    finally:
        for counter in counters:
            counter.stop()
            if goodbye:  # log off rather than leave a lingering session behind
                counter.transport.write(goodbye)
            counter.transport.loseConnection()
    rate, cpu = (f1 - f0) / (t1 - t0), cpu1 - cpu0
    return {
        "rate": rate,
        "per_cpu_s": round((f1 - f0) / cpu) if cpu > 0 else None,
        "errors": sum(x.errors for x in counters),
        "cpu": round(cpu, 2),
        "seconds": round(t1 - t0, 2),
    }


@defer.inlineCallbacks
def through_bridge(
    reactor: Any, port: int, conns: int, window: int, seconds: float, procs: list[Any]
) -> Any:
    """Log on, then Heartbeats; ``procs[0]`` is the bridge."""
    counters = [
        Counter(
            [request(c.CREATE_SESSION, {"user": f"agent{i % 50 + 1}", "password": "demo"})],
            reload=HEARTBEAT,
            window=window,
        )
        for i in range(conns)
    ]
    goodbye = request(c.DESTROY_SESSION, {}, rid=3)
    result = yield _measure(reactor, port, counters, seconds, procs, goodbye)
    return result


@defer.inlineCallbacks
def reference(
    reactor: Any, port: int, conns: int, window: int, seconds: float, procs: list[Any]
) -> Any:
    """The same Heartbeats to minimal_responder.py (``procs[0]``)."""
    counters = [Counter([], reload=HEARTBEAT, window=window) for _ in range(conns)]
    result = yield _measure(reactor, port, counters, seconds, procs)
    return result
