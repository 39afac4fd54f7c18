"""QueueChanged deliveries per CPU second to many watching sessions, at saturation.

Through the bridge: N clients log on and watch ``queue:Sales``. Reference:
``minimal_fanout.py``, registered on the same Notifier, subscribes to the same topic
once its N plain clients are connected and writes every upstream read's events,
joined, to each client in one write. Both over clear-text TCP on loopback to the
clients, so that the figure is the fan-out machinery and not OpenSSL; both read the
Notifier over TLS.

Saturation is a backlog: the Notifier publishes ``events`` identical QueueChanged
events at once (``POST /api/publish`` with ``repeat``), so the server's link is full
from the first read to the last and every upstream read is as large as the server
takes it, whatever the machine does meanwhile (a traffic rate that one server keeps
up with and the other does not would compare batch sizes, not servers). The clients
are drained by one thread (``fanout_drain.py``: epoll, one buffer, a marker counted,
no parsing) so that the load generator leaves the server its core. The window runs
from the publish to the moment the last client has the last event; the figure
compared is deliveries (events x clients, every one counted) per CPU second of the
server process (``per_cpu_s``), rounds alternating between the two.
"""

from __future__ import annotations

import json
import time
from typing import Any

import treq
from twisted.internet import defer, threads
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory

from bench.common import Counter, request
from bench.fanout_drain import drain
from smbridge.codec import catalog as c

MARKER = b"fanout-bench-7f3a"  # in every benchmark event, nowhere else
EVENT = {
    "objectType": c.QUEUE_CHANGED[0],
    "eventId": c.QUEUE_CHANGED[1],
    "topic": "queue:Sales",
    # about 250 bytes on the wire, as the traffic generator's events
    "payload": {"changed": [{"id": MARKER.decode(), "state": "Offering", "note": "x" * 140}]},
}


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
def _subscribed(reactor: Any, control: str, deadline: float = 30.0) -> Any:
    """Wait until exactly one subscription holds queue:Sales at the Notifier (this round's
    server, the other's released), so that the backlog goes to the server measured only."""
    from twisted.internet import task

    from smbridge.testing import http_json

    end = time.monotonic() + deadline
    while time.monotonic() < end:
        _, state = yield http_json(reactor, "GET", f"{control}/api/state")
        if state["topics"].get("queue:Sales", {}).get("subscribers") == 1:
            return
        yield task.deferLater(reactor, 0.05, lambda: None)
    raise TimeoutError("queue:Sales is not held by exactly one subscription")


@defer.inlineCallbacks
def _measure(
    reactor: Any,
    control: str,
    counters: list[Counter],
    events: int,
    procs: list[Any],
    goodbye: bytes = b"",
) -> Any:
    """The backlog published and drained, then the clients closed (the server lets the topic go)."""
    for counter in counters:
        counter.transport.stopReading()  # type: ignore[union-attr]  # the drain reads now
    socks = [counter.transport.getHandle() for counter in counters]  # type: ignore[union-attr]
    deadline = 60.0 + events / 100
    try:
        cpu0 = [p.cpu_seconds() for p in procs]
        t0 = time.monotonic()
        drained = threads.deferToThread(drain, socks, MARKER, events, deadline)
        response = yield treq.post(f"{control}/api/publish", json={**EVENT, "repeat": events})
        answer = yield response.json()
        if answer.get("events") != events and events > 1:
            raise RuntimeError(f"the Notifier did not publish the backlog: {answer}")
        out = yield drained
        cpu1 = [p.cpu_seconds() for p in procs]
    finally:
        for counter in counters:
            if goodbye:  # log off: a lingering session would still be sent every event
                counter.transport.write(goodbye)  # type: ignore[union-attr]
            counter.transport.loseConnection()  # type: ignore[union-attr]
    if out["finished_at"] is None:
        raise RuntimeError(
            f"{len(counters) - out['complete']} of {len(counters)} clients did not get all "
            f"{events} events in {deadline:g} s"
        )
    seconds = out["finished_at"] - t0
    cpu = cpu1[0] - cpu0[0]
    delivered = events * len(counters)
    return {
        "rate": delivered / seconds,
        "per_cpu_s": round(delivered / cpu) if cpu > 0 else None,
        "deliveries": delivered,
        "frame_bytes": round(min(out["bytes"]) / events, 1),
        "cpu": [round(b - a, 2) for a, b in zip(cpu0, cpu1, strict=True)],
        "seconds": round(seconds, 2),
    }


@defer.inlineCallbacks
def through_bridge(
    reactor: Any,
    port: int,
    control: str,
    clients: int,
    events: int,
    procs: list[Any],
) -> Any:
    """N sessions log on and watch queue:Sales; ``procs[0]`` is the bridge."""

    def make(i: int) -> Counter:
        script = [
            request(c.CREATE_SESSION, {"user": f"agent{i % 50 + 1}", "password": "demo"}),
            request(c.WATCH_QUEUE, {"queue": "Sales"}, rid=2),
        ]
        return Counter(script)

    counters = yield _connect_all(reactor, port, make, clients)
    yield _subscribed(reactor, control)
    goodbye = request(c.DESTROY_SESSION, {}, rid=3)
    result = yield _measure(reactor, control, counters, events, procs, goodbye)
    return result


@defer.inlineCallbacks
def reference(
    reactor: Any,
    port: int,
    control: str,
    clients: int,
    events: int,
    procs: list[Any],
) -> Any:
    """N plain clients on minimal_fanout.py (``procs[0]``), which then subscribes."""
    counters = yield _connect_all(reactor, port, lambda i: Counter([]), clients)
    yield _subscribed(reactor, control)
    result = yield _measure(reactor, control, counters, events, procs)
    return result


def describe(result: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in result.items() if k != "cpu"})
