"""--max-watches holds whatever arrives in one read: watches in flight count against it."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import TestCase

from smbridge import pki
from smbridge.codec import Decoder, Frame, Kind, encode
from smbridge.codec import catalog as c
from smbridge.notifier.demo import demo_site
from smbridge.testing import RouterHarness, poll, start_site


def _batch(h: RouterHarness, conn: Any, requests: list[tuple[tuple[int, int], dict[str, Any]]]):
    """Feed every request to the connection in one read, before any answer."""
    data = b"".join(encode(Kind.REQUEST, *m, rid, b) for rid, (m, b) in enumerate(requests, 1))
    conn.dataReceived(data)
    h.clock.advance(0)


def _outcomes(frames: list[Frame]) -> dict[int, str]:
    return {f.request_id: "ok" if f.kind == Kind.RESPONSE else f.parsed()["code"] for f in frames}


def test_pipelined_watches_in_one_read_stop_at_the_limit():
    """Five queue watches in one read with a limit of three: three held, two refused at once."""
    h = RouterHarness(max_watches=3)
    a, ta, _ = h.logon()
    _batch(h, a, [(c.WATCH_QUEUE, {"queue": f"Q{i}"}) for i in range(1, 6)])
    subs = h.upstream()
    assert [f.parsed()["topic"] for f in subs] == ["queue:Q1", "queue:Q2", "queue:Q3"]
    assert _outcomes(h.received(ta)) == {4: "too-many-watches", 5: "too-many-watches"}
    for sub in subs:
        h.serve(sub, {"queue": sub.parsed()["topic"][6:], "interactions": []})
    assert _outcomes(h.received(ta)) == {1: "ok", 2: "ok", 3: "ok"}
    assert h.registry.get(next(s.id for s in h.registry)).topics == {
        "queue:Q1", "queue:Q2", "queue:Q3"
    }  # fmt: skip


def test_every_watch_kind_counts_while_in_flight():
    """Queue, status, statistics and directory watches in flight share the one limit."""
    h = RouterHarness(max_watches=4)
    a, ta, _ = h.logon()
    _batch(
        h,
        a,
        [
            (c.WATCH_STATUS, {"users": ["agent2", "agent3"]}),
            (c.WATCH_STATISTICS, {"workgroup": "Sales"}),
            (c.GET_DIRECTORY, {"name": "Company Directory"}),
            (c.WATCH_QUEUE, {"queue": "Sales"}),
            (c.WATCH_STATUS, {"users": ["agent2"]}),  # already on its way: no more room needed
        ],
    )
    assert _outcomes(h.received(ta)) == {4: "too-many-watches"}
    assert len(h.upstream()) == 4  # status x2, statistics, directory


def test_a_repeated_watch_in_flight_counts_once_and_failures_free_room():
    """The same queue twice in one read is one watch; a refused subscription frees its room."""
    h = RouterHarness(max_watches=2)
    a, ta, _ = h.logon()
    _batch(h, a, [(c.WATCH_QUEUE, {"queue": q}) for q in ("Q1", "Q1", "Ghost", "Q2")])
    q1, ghost = h.upstream()
    assert _outcomes(h.received(ta)) == {4: "too-many-watches"}
    h.notifier.answer(ghost, {"code": "not-found", "message": "no queue Ghost"}, Kind.ERROR)
    assert _outcomes(h.received(ta)) == {3: "not-found"}
    h.send(a, c.WATCH_QUEUE, 9, {"queue": "Q2"})
    (q2,) = h.upstream()
    for sub in (q1, q2):
        h.serve(sub, {"queue": sub.parsed()["topic"][6:], "interactions": []})
    assert _outcomes(h.received(ta)) == {1: "ok", 2: "ok", 9: "ok"}
    h.send(a, c.WATCH_QUEUE, 10, {"queue": "Q3"})
    assert _outcomes(h.received(ta)) == {10: "too-many-watches"}


def test_unwatching_a_watch_in_flight_frees_its_room():
    """UnwatchQueue of a watch still waiting for its snapshot cancels it and frees room."""
    h = RouterHarness(max_watches=1)
    a, ta, _ = h.logon()
    _batch(
        h,
        a,
        [
            (c.WATCH_QUEUE, {"queue": "Q1"}),
            (c.UNWATCH_QUEUE, {"queue": "Q1"}),
            (c.WATCH_QUEUE, {"queue": "Q2"}),
            (c.WATCH_QUEUE, {"queue": "Q3"}),
        ],
    )
    assert _outcomes(h.received(ta)) == {1: "cancelled", 2: "ok", 4: "too-many-watches"}
    subs = [f for f in h.upstream() if (f.object_type, f.event_id) == c.LINK_SUBSCRIBE]
    h.serve(subs[-1], {"queue": "Q2", "interactions": []})
    assert _outcomes(h.received(ta)) == {3: "ok"}


def test_a_session_ending_with_watches_in_flight_leaves_nothing_counted():
    """Watches in flight when the session ends are released and no longer counted."""
    h = RouterHarness(max_watches=5)
    a, ta, _ = h.logon()
    _batch(h, a, [(c.WATCH_QUEUE, {"queue": f"Q{i}"}) for i in range(3)])
    subs = h.upstream()
    h.send(a, c.DESTROY_SESSION, 50)
    assert h.router.watches.in_flight == {}
    for sub in subs:
        h.serve(sub, {"queue": sub.parsed()["topic"][6:], "interactions": []})
    assert h.router.fanout.topics.keys() == {"parameters"}
    assert h.router.watches.in_flight == {}


# --- over real sockets: a raw client that writes a whole batch in one write ---------


class RawClient(Protocol):
    """A bare TLS client: writes bytes as given and collects answers by requestId."""

    def __init__(self) -> None:
        self.decoder = Decoder()
        self.answers: dict[int, Frame] = {}
        self.ready: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        # The first request goes after the handshake, so GetVersion doubles as "ready".
        self.transport.write(encode(Kind.REQUEST, *c.GET_VERSION, 0xFFFF, {}))

    def dataReceived(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            assert isinstance(frame, Frame), frame
            if frame.kind == Kind.NOTIFICATION:
                continue
            self.answers[frame.request_id] = frame
            if frame.request_id == 0xFFFF and not self.ready.called:
                self.ready.callback(None)

    def write_batch(self, requests: list[tuple[int, tuple[int, int], dict[str, Any]]]) -> None:
        self.transport.write(b"".join(encode(Kind.REQUEST, *m, rid, b) for rid, m, b in requests))

    def outcome(self, rid: int) -> str:
        frame = self.answers[rid]
        return "ok" if frame.kind == Kind.RESPONSE else str(frame.parsed()["code"])


def _sixty_one_watches() -> list[tuple[int, tuple[int, int], dict[str, Any]]]:
    """61 distinct watches of things the demo site has: 3 queues, 3 workgroups, 4
    directories and 51 users, in that order, requestIds 1..61."""
    wanted: list[tuple[tuple[int, int], dict[str, Any]]] = []
    wanted += [(c.WATCH_QUEUE, {"queue": q}) for q in ("Sales", "Support", "Billing")]
    wanted += [(c.WATCH_STATISTICS, {"workgroup": w}) for w in ("Sales", "Support", "Billing")]
    directories = ("Company Directory", "Sales", "Support", "Billing")
    wanted += [(c.GET_DIRECTORY, {"name": n}) for n in directories]
    wanted += [(c.WATCH_STATUS, {"users": [u]}) for u in USERS]
    return [(rid, m, b) for rid, (m, b) in enumerate(wanted, start=1)]


USERS = sorted(demo_site().users)  # 51 users


@pytest.mark.integration
class PipelinedWatches(TestCase):
    """The issue's reproduction: 61 watches in one write with --max-watches 20."""

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.site = yield start_site(
            reactor, Path(tempfile.mkdtemp(prefix="smbridge-watches-")), max_watches=20
        )
        self.addCleanup(self.site.stop)
        self.assertEqual(len(_sixty_one_watches()), 61)

    @defer.inlineCallbacks
    def _raw_logon(self, user: str) -> Any:
        endpoint = wrapClientTLS(
            pki.client_options("localhost", self.site.pki.ca),
            HostnameEndpoint(reactor, "127.0.0.1", self.site.client_port),
        )
        client = yield connectProtocol(endpoint, RawClient())
        self.addCleanup(lambda: client.transport.loseConnection())
        yield client.ready
        client.write_batch([(100, c.CREATE_SESSION, {"user": user, "password": "demo"})])
        yield poll(lambda: 100 in client.answers)
        self.assertEqual(client.outcome(100), "ok")
        return client

    @defer.inlineCallbacks
    def _check_limit(self, clients: list[RawClient]) -> Any:
        batch = _sixty_one_watches()
        for client in clients:
            client.write_batch(batch)
        yield poll(lambda: all(all(r in cl.answers for r, _, _ in batch) for cl in clients))
        for client in clients:
            outcomes = [client.outcome(rid) for rid, _, _ in batch]
            self.assertEqual(outcomes, ["ok"] * 20 + ["too-many-watches"] * 41)
        sessions = list(self.site.bridge.router.registry)
        self.assertEqual([len(s.topics) for s in sessions], [20] * len(clients))
        # Unwatching frees room for exactly one more.
        for client in clients:
            client.write_batch(
                [
                    (200, c.UNWATCH_QUEUE, {"queue": "Sales"}),
                    (201, c.WATCH_STATUS, {"users": [USERS[-1]]}),
                    (202, c.WATCH_STATUS, {"users": [USERS[-2]]}),
                ]
            )
        yield poll(lambda: all(202 in cl.answers and 201 in cl.answers for cl in clients))
        for client in clients:
            self.assertEqual(
                [client.outcome(r) for r in (200, 201, 202)], ["ok", "ok", "too-many-watches"]
            )

    @defer.inlineCallbacks
    def test_sixty_one_watches_in_one_write_hold_exactly_the_limit(self) -> Any:
        """One session pipelines 61 watches in one write: exactly 20 succeed, 41 are refused."""
        client = yield self._raw_logon("agent1")
        yield self._check_limit([client])

    @defer.inlineCallbacks
    def test_several_sessions_pipelining_at_once_each_hold_the_limit(self) -> Any:
        """Three sessions pipelining at the same time each hold exactly --max-watches."""
        clients = []
        for user in ("agent1", "agent2", "agent3"):
            clients.append((yield self._raw_logon(user)))
        yield self._check_limit(clients)
