"""Session lifecycle figures: memory held by lingering sessions, and resume latency.

    python bench/lifecycle.py            # writes bench/results/lifecycle.json
    python bench/lifecycle.py --quick    # small and short, to check that it works

Memory: sessions are created through the real router against a scripted Notifier
under a Clock (smbridge.testing.RouterHarness), each watching one shared queue;
their connections then drop, leaving them lingering. tracemalloc measures what
the lingering sessions hold, idle and with 20 notifications each in their replay
buffers (fan-out frames are shared bytes, so a buffered event costs a reference,
not a copy).

Resume latency: the real bridge and reference Notifier in this process over real
loopback TLS (smbridge.testing.start_site); a raw client aborts its connection,
dials again and sends ResumeSession. Two figures: the ResumeSession round trip on
the fresh connection (request written -> reply read), and the whole reconnect
(dial, TLS handshake, resume). A third run leaves 50 notifications for the
client to miss and measures until the last replayed one is read. Client and
bridge share one process and core, so these are upper bounds.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, task  # noqa: E402
from twisted.internet.endpoints import (  # noqa: E402
    HostnameEndpoint,
    connectProtocol,
    wrapClientTLS,
)

from bench.common import write_results  # noqa: E402
from smbridge import pki  # noqa: E402
from smbridge.client.protocol import BridgeProtocol  # noqa: E402
from smbridge.codec import Kind, encode  # noqa: E402
from smbridge.codec import catalog as c  # noqa: E402
from smbridge.testing import RouterHarness, http_json, start_site  # noqa: E402


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "p50": round(statistics.median(ordered) * 1000, 3),
        "p99": round(p99 * 1000, 3),
        "max": round(ordered[-1] * 1000, 3),
        "samples": len(ordered),
    }


# --- memory -------------------------------------------------------------------------------
def lingering_memory(count: int) -> dict[str, Any]:
    """Bytes held per lingering session, idle and with 20 buffered notifications."""
    h = RouterHarness()
    conn, t, _ = h.logon("warmup")  # the queue topic exists before the measure starts
    h.send(conn, c.WATCH_QUEUE, 2, {"queue": "Sales"})
    (sub,) = h.upstream()
    sales = h.serve(sub, {"queue": "Sales", "interactions": []})
    h.received(t)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(count):
        conn, t = h.client()
        h.send(
            conn,
            c.CREATE_SESSION,
            1,
            {"user": "agent1", "password": "demo", "clientId": f"pc{i}"},
        )
        (auth,) = h.upstream()
        h.notifier.answer(auth, {"user": {"id": "agent1"}, "location": "Indianapolis"})
        for frame in h.upstream():
            if (frame.object_type, frame.event_id) == c.LINK_SUBSCRIBE:
                h.serve(frame, {"user": "agent1", "interactions": []})
        h.send(conn, c.WATCH_QUEUE, 2, {"queue": "Sales"})
        h.received(t)
        conn.connectionLost(None)
        t.clear()
    del conn, t
    h.upstream()
    gc.collect()
    idle = tracemalloc.get_traced_memory()[0] - base
    lingering = h.registry.lingering()
    for n in range(20):
        item = {"id": f"call-{n}", "type": "call", "state": "Offering", "workgroup": "Sales"}
        h.notifier.event(c.QUEUE_CHANGED, sales, {"queue": "Sales", "added": [item]})
    h.clock.advance(0)
    gc.collect()
    buffered = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    sample = next(iter(h.registry))
    return {
        "sessions": count,
        "lingering": lingering,
        "idleBytes": idle,
        "idleBytesPerSession": round(idle / count),
        "with20EventsBytes": buffered,
        "with20EventsBytesPerSession": round(buffered / count),
        "replayFramesPerSession": len(sample.replay),
        "replayBytesAccountedPerSession": sample.replay.size,
    }


# --- resume latency -------------------------------------------------------------------------
class Client:
    def __init__(self, reactor: Any, port: int, ca: Path) -> None:
        self.reactor = reactor
        self.port = port
        self.ca = ca
        self.proto: BridgeProtocol | None = None
        self.received = 0
        self.waiting: tuple[int, defer.Deferred[None]] | None = None

    @defer.inlineCallbacks
    def dial(self) -> Any:
        endpoint = wrapClientTLS(
            pki.client_options("localhost", self.ca),
            HostnameEndpoint(self.reactor, "127.0.0.1", self.port),
        )
        proto = BridgeProtocol(tls=True)
        yield connectProtocol(endpoint, proto)
        yield proto.ready
        proto.add_listener(lambda frame, p=proto: self._note(p))
        self.proto = proto
        return proto

    def _note(self, proto: BridgeProtocol) -> None:
        if proto is not self.proto:
            return
        self.received += 1
        waiting = self.waiting
        if waiting is not None and self.received >= waiting[0]:
            self.waiting = None
            waiting[1].callback(None)

    def until(self, count: int) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        if self.received >= count:
            d.callback(None)
        else:
            self.waiting = (count, d)
        return d


@defer.inlineCallbacks
def resume_latency(reactor: Any, rounds: int) -> Any:
    site = yield start_site(reactor, Path(tempfile.mkdtemp(prefix="smbridge-bench-life-")))
    try:
        yield http_json(reactor, "POST", f"{site.control_url}/api/traffic", {"callsPerSecond": 0})
        client = Client(reactor, site.client_port, site.pki.ca)
        proto = yield client.dial()
        session = yield proto.request(*c.CREATE_SESSION, {"user": "agent1", "password": "demo"})
        bridge_session = site.bridge.registry.get(session["sessionId"])
        missed = encode(Kind.NOTIFICATION, *c.ROSTER_CHANGED, 0, {"roster": [], "n": "x" * 200})
        round_trips: list[float] = []
        reconnects: list[float] = []
        with_replay: list[float] = []
        for i in range(rounds):
            replay = i % 2 == 1  # every other round misses 50 notifications
            old, client.proto = client.proto, None
            assert old is not None and old.transport is not None
            closed = old.when_closed()
            old.transport.abortConnection()
            yield closed
            for _ in range(200):  # bounded: the bridge notices the drop within a few turns
                if bridge_session.state.value == "lingering":
                    break
                yield task.deferLater(reactor, 0.002, lambda: None)
            if replay:
                for _ in range(50):
                    bridge_session.send(missed)
            target = bridge_session.replay.count
            started = time.perf_counter()
            proto = yield client.dial()
            body = {
                "sessionId": session["sessionId"],
                "resumeToken": session["resumeToken"],
                "received": client.received,
            }
            sent = time.perf_counter()
            reply = yield proto.request(*c.RESUME_SESSION, body).addCallback(
                lambda r: (setattr(client, "received", r["position"]), r)[1]
            )
            answered = time.perf_counter()
            assert reply["resumed"] and not reply["gap"], reply
            yield client.until(target)
            done = time.perf_counter()
            if replay:
                with_replay.append(done - started)
            else:
                round_trips.append(answered - sent)
                reconnects.append(answered - started)
        # The reference, in the same run: what a client without resume does after a
        # drop (dial, CreateSession, WatchQueue to restore its view).
        fresh: list[float] = []
        for _ in range(max(1, rounds // 4)):
            started = time.perf_counter()
            other = Client(reactor, site.client_port, site.pki.ca)
            proto = yield other.dial()
            yield proto.request(*c.CREATE_SESSION, {"user": "agent2", "password": "demo"})
            yield proto.request(*c.WATCH_QUEUE, {"queue": "Sales"})
            fresh.append(time.perf_counter() - started)
            yield proto.request(*c.DESTROY_SESSION, {})
            yield proto.close()
        reconnect_p50 = _percentiles(reconnects)["p50"]
        fresh_p50 = _percentiles(fresh)["p50"]
        return {
            "rounds": rounds,
            "resumeRoundTripMs": _percentiles(round_trips),
            "reconnectAndResumeMs": _percentiles(reconnects),
            "reconnectResumeAndReplay50Ms": _percentiles(with_replay),
            "reconnectAndFreshLogonMs": _percentiles(fresh),
            "resumeOverFreshLogonP50": round(reconnect_p50 / fresh_p50, 2),
        }
    finally:
        yield site.stop()


@defer.inlineCallbacks
def main(reactor: Any, quick: bool) -> Any:
    count = 1000 if quick else 10_000
    memory = lingering_memory(count)
    print(f"memory: {memory}")
    latency = yield resume_latency(reactor, 40 if quick else 400)
    print(f"latency: {latency}")
    path = write_results(
        "lifecycle-quick" if quick else "lifecycle",
        {"lingeringMemory": memory, "resume": latency, "quick": quick},
    )
    print(f"results: {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    task.react(main, [args.quick])
