"""Request round trips per second: through the bridge versus straight to the Notifier.

Both paths use TLS and the same request, SetStatus, which the Notifier answers
itself: via the bridge a client logs on and sends ``{"status": ...}``, and the
bridge forwards it with the session's identity; directly, a client registers on
the Notifier's link as a bridge would and sends the same request with the
identity already in it. Each connection keeps ``window`` requests open.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory

from bench.common import Counter, request
from smbridge import pki
from smbridge.codec import catalog as c


@defer.inlineCallbacks
def _run_window(reactor: Any, counters: list[Counter], seconds: float, procs: list[Any]) -> Any:
    for counter in counters:
        counter.start()
    yield task.deferLater(reactor, 0.5, lambda: None)  # warm up
    f0, t0 = sum(x.frames for x in counters), time.monotonic()
    cpu0 = [p.cpu_seconds() for p in procs]
    yield task.deferLater(reactor, seconds, lambda: None)
    f1, t1 = sum(x.frames for x in counters), time.monotonic()
    cpu1 = [p.cpu_seconds() for p in procs]
    for counter in counters:
        counter.stop()
        counter.transport.loseConnection()
    errors = sum(x.errors for x in counters)
    return {
        "rate": (f1 - f0) / (t1 - t0),
        "errors": errors,
        "cpu": [round(b - a, 2) for a, b in zip(cpu0, cpu1, strict=True)],
        "seconds": round(t1 - t0, 2),
    }


@defer.inlineCallbacks
def _connect_and_measure(
    reactor: Any, counters: list[Counter], tls: Any, port: int, seconds: float, procs: list[Any]
) -> Any:
    for counter in counters:
        endpoint = wrapClientTLS(tls, TCP4ClientEndpoint(reactor, "127.0.0.1", port))
        yield endpoint.connect(Factory.forProtocol(lambda counter=counter: counter))
    yield defer.gatherResults([x.ready for x in counters])
    result = yield _run_window(reactor, counters, seconds, procs)
    return result


@defer.inlineCallbacks
def through_bridge(
    reactor: Any,
    files: pki.SitePKI,
    port: int,
    conns: int,
    window: int,
    seconds: float,
    procs: list[Any],
) -> Any:
    counters = []
    for i in range(conns):
        logon = request(c.CREATE_SESSION, {"user": f"agent{i % 50 + 1}", "password": "demo"})
        counters.append(
            Counter([logon], reload=request(c.SET_STATUS, {"status": "Available"}), window=window)
        )
    tls = pki.client_options("localhost", files.ca)
    result = yield _connect_and_measure(reactor, counters, tls, port, seconds, procs)
    return result


@defer.inlineCallbacks
def direct(
    reactor: Any,
    files: pki.SitePKI,
    port: int,
    conns: int,
    window: int,
    seconds: float,
    procs: list[Any],
) -> Any:
    counters = []
    for i in range(conns):
        register = request(
            c.LINK_REGISTER,
            {
                "name": f"bench{i}",
                "fqdn": "localhost",
                "kind": "off-server",
                "location": "",
                "ports": {},
                "accept": "default",
            },
        )
        body = {
            "status": "Available",
            "_session": {"id": f"bench-{i}", "user": f"agent{i % 50 + 1}"},
        }
        counters.append(Counter([register], reload=request(c.SET_STATUS, body), window=window))
    tls = pki.client_options("localhost", files.ca, files.bridge_client)
    result = yield _connect_and_measure(reactor, counters, tls, port, seconds, procs)
    return result
