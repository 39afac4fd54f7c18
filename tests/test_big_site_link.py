"""Large snapshots and directories in bounded pieces: the Notifier's link, the bridge's link
reassembly and GetDirectory paging, over in-memory transports."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from smbridge.codec import catalog as c
from smbridge.codec.frames import Decoder, Frame, Kind, encode
from smbridge.notifier.link import NotifierLinkFactory, subscribe_answer
from smbridge.notifier.model import Notifier
from smbridge.notifier.sizing import sizing_site
from smbridge.testing import SAMPLE_REGISTRATION, RouterHarness
from smbridge.transports.batch import WriteBatcher
from smbridge.upstream.link import DeferredPending, UpstreamLink

BOUND = 4096
DIRECTORY = "Company Directory"


def entries(count: int, prefix: str = "u") -> list[dict[str, Any]]:
    return [{"id": f"{prefix}{i}", "displayName": f"User number {i}"} for i in range(count)]


class NotifierEnd:
    """The Notifier's link protocol with a small piece bound, frames read back."""

    def __init__(self, users: int) -> None:
        self.notifier = Notifier(sizing_site(0, business=users), Clock())
        self.notifier.piece_bytes = BOUND
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.7", 40000))
        self.proto = NotifierLinkFactory(self.notifier).buildProtocol(None)
        self.proto.makeConnection(self.transport)
        self.decoder = Decoder()
        self.request(c.LINK_REGISTER, 1, SAMPLE_REGISTRATION)

    def request(self, message: tuple[int, int], rid: int, body: dict[str, Any]) -> list[Frame]:
        self.proto.dataReceived(encode(Kind.REQUEST, *message, rid, body))
        data = self.transport.value()
        self.transport.clear()
        return self.decoder.feed(data)  # type: ignore[return-value]


def test_notifier_answers_a_large_subscribe_in_bounded_pieces() -> None:
    """A large snapshot: a response with more, then SnapshotParts for the sub, all bounded."""
    end = NotifierEnd(600)
    frames = end.request(c.LINK_SUBSCRIBE, 9, {"topic": f"directory:{DIRECTORY}", "sub": 5})
    first, parts = frames[0], frames[1:]
    assert (first.kind, first.request_id) == (Kind.RESPONSE, 9)
    assert first.parsed()["more"] is True and first.parsed()["sub"] == 5
    assert first.parsed()["snapshot"]["name"] == DIRECTORY
    assert len(parts) >= 10
    assert all((p.kind, p.object_type, p.event_id) == (Kind.NOTIFICATION, 200, 12) for p in parts)
    assert all(p.request_id == 5 for p in parts)
    assert [p.parsed()["more"] for p in parts] == [True] * (len(parts) - 1) + [False]
    assert all(len(f.payload) <= BOUND for f in frames)
    assert end.proto.largest_frame <= BOUND + 14
    ids = [e["id"] for e in first.parsed()["snapshot"]["entries"]]
    ids += [e["id"] for p in parts for e in p.parsed()["snapshot"]["entries"]]
    state = end.notifier.topics[f"directory:{DIRECTORY}"]
    assert ids == list(state.items)  # type: ignore[attr-defined]


def test_notifier_answers_a_small_subscribe_in_one_response() -> None:
    """A snapshot that fits is one plain response, as before: no more, no sub, no parts."""
    frames = subscribe_answer(3, 4, {"queue": "Sales", "interactions": []}, BOUND)
    assert len(frames) == 1
    (frame,) = Decoder().feed(frames[0])
    assert frame.parsed() == {"snapshot": {"queue": "Sales", "interactions": []}}  # type: ignore[union-attr]


def test_notifier_splits_a_large_change_event_for_each_subscription() -> None:
    """A change adding 600 entries reaches a subscription as several bounded events."""
    end = NotifierEnd(3)
    end.request(c.LINK_SUBSCRIBE, 9, {"topic": f"directory:{DIRECTORY}", "sub": 5})
    added = entries(600, "new")
    end.notifier.publish(
        f"directory:{DIRECTORY}",
        *c.DIRECTORY_CHANGED,
        {"name": DIRECTORY, "added": added, "changed": [], "removed": []},
    )
    events = end.decoder.feed(end.transport.value())
    assert len(events) > 5
    assert all(isinstance(e, Frame) and len(e.payload) <= BOUND for e in events)
    assert all(e.request_id == 5 for e in events)  # type: ignore[union-attr]
    assert [i for e in events for i in e.parsed()["added"]] == added  # type: ignore[union-attr]


def _serve_in_pieces(h: RouterHarness, sub: Frame, snapshot: dict[str, Any]) -> int:
    number = int(sub.parsed()["sub"])
    for raw in subscribe_answer(sub.request_id, number, snapshot, BOUND):
        h.notifier.link.dataReceived(raw)
    return number


def test_bridge_assembles_the_pieces_before_answering_and_pages_the_directory() -> None:
    """The bridge answers nobody until the last piece; GetDirectory then pages by bytes."""
    h = RouterHarness()
    h.router.directories.page_bytes = BOUND
    conn, t, _ = h.logon()
    h.send(conn, c.GET_DIRECTORY, 20, {"name": DIRECTORY})
    (sub,) = h.upstream()
    all_entries = entries(500)
    raws = subscribe_answer(
        sub.request_id, sub.parsed()["sub"], {"name": DIRECTORY, "entries": all_entries}, BOUND
    )
    for raw in raws[:-1]:
        h.notifier.link.dataReceived(raw)
    assert h.received(t) == []  # not before the last piece
    h.notifier.link.dataReceived(raws[-1])
    (page,) = h.received(t)
    body = page.parsed()
    assert len(page.payload) <= BOUND
    assert (body["offset"], body["total"], body["more"]) == (0, 500, True)
    got = list(body["entries"])
    rid = 21
    while body["more"]:
        h.send(conn, c.GET_DIRECTORY, rid, {"name": DIRECTORY, "offset": body["next"]})
        (page,) = h.received(t)
        body = page.parsed()
        assert len(page.payload) <= BOUND and body["version"] == 0
        got += body["entries"]
        rid += 1
    assert got == all_entries and rid > 23
    assert body["next"] is None
    assert h.upstream() == []  # one subscription served every page


def test_directory_page_honours_limit_and_version_follows_changes() -> None:
    """limit caps a page's entries; a change bumps the version a page walk compares."""
    h = RouterHarness()
    conn, t, _ = h.logon()
    h.send(conn, c.GET_DIRECTORY, 20, {"name": DIRECTORY, "limit": 2, "offset": 1})
    (sub,) = h.upstream()
    number = _serve_in_pieces(h, sub, {"name": DIRECTORY, "entries": entries(5)})
    (page,) = h.received(t)
    assert [e["id"] for e in page.parsed()["entries"]] == ["u1", "u2"]
    assert (page.parsed()["next"], page.parsed()["version"]) == (3, 0)
    h.notifier.event(
        c.DIRECTORY_CHANGED,
        number,
        {"name": DIRECTORY, "added": [{"id": "x"}], "changed": [], "removed": []},
    )
    h.send(conn, c.GET_DIRECTORY, 21, {"name": DIRECTORY, "offset": 5})
    change, page = h.received(t)
    assert change.parsed()["added"] == [{"id": "x"}]
    assert page.parsed()["entries"] == [{"id": "x"}] and page.parsed()["version"] == 1
    h.send(conn, c.GET_DIRECTORY, 22, {"name": DIRECTORY, "offset": -1})
    (bad,) = h.received(t)
    assert bad.kind == Kind.ERROR and "offset" in bad.parsed()["message"]


def test_link_loss_while_assembling_fails_the_waiting_watch() -> None:
    """The link dropping between pieces answers the waiting client, never leaves it hanging."""
    h = RouterHarness()
    conn, t, _ = h.logon()
    h.send(conn, c.GET_DIRECTORY, 20, {"name": DIRECTORY})
    (sub,) = h.upstream()
    raws = subscribe_answer(
        sub.request_id, sub.parsed()["sub"], {"name": DIRECTORY, "entries": entries(300)}, BOUND
    )
    h.notifier.link.dataReceived(raws[0])
    h.notifier.link.connectionLost(None)
    (answer,) = h.received(t)
    assert answer.kind == Kind.ERROR and answer.parsed()["code"] == "upstream-unavailable"


def test_a_stray_snapshot_part_is_ignored() -> None:
    """A SnapshotPart for a sub not being assembled changes nothing and is not relayed."""
    h = RouterHarness()
    conn, t, _ = h.logon()
    h.notifier.link.dataReceived(
        encode(Kind.NOTIFICATION, *c.LINK_SNAPSHOT_PART, 77, {"sub": 77, "more": False})
    )
    assert h.received(t) == [] and h.notifier.link.assembling == {}


class _Owner:
    """The least a link needs of its connector: notifications are collected."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.request_timeout: float | None = None
        self.dead_after: float | None = None
        self.dialled = "notifier:5597"
        self.seen: list[Frame] = []
        self.notification = self.seen.append

    def link_made(self, link: Any) -> None:
        pass

    def link_lost(self, link: Any, reason: Any) -> None:
        pass


snapshot_lists = st.lists(
    st.fixed_dictionaries({"id": st.integers(0, 10**6), "n": st.text(max_size=30)}), max_size=60
)


@settings(max_examples=60, deadline=None)
@given(
    first=snapshot_lists,
    second=snapshot_lists,
    bound=st.integers(300, 2000),
    seed=st.randoms(use_true_random=False),
    cuts=st.lists(st.integers(1, 300), max_size=40),
)
def test_link_reassembles_interleaved_answers_against_a_naive_model(
    first: list[dict[str, Any]],
    second: list[dict[str, Any]],
    bound: int,
    seed: Any,
    cuts: list[int],
) -> None:
    """Two answers in pieces, interleaved with other events, bytes cut anywhere: each waiter
    gets exactly its whole snapshot once, and every other notification passes, in order."""
    owner = _Owner()
    link = UpstreamLink(owner, WriteBatcher(owner.clock), 1 << 20)  # type: ignore[arg-type]
    link.makeConnection(StringTransport())  # type: ignore[no-untyped-call]
    got: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    streams = []
    for rid, sub, items in ((1, 11, first), (2, 12, second)):
        pending = DeferredPending()
        pending.deferred.addCallback(got[rid].append)
        link.request(*c.LINK_SUBSCRIBE, b"{}", pending)
        streams.append(subscribe_answer(rid, sub, {"name": f"D{sub}", "entries": items}, bound))
    others = [encode(Kind.NOTIFICATION, *c.QUEUE_CHANGED, 99, {"n": i}) for i in range(5)]
    # The naive model: each stream's frames in order, merged in any interleaving.
    merged: list[bytes] = []
    queues = [list(streams[0]), list(streams[1]), list(others)]
    while any(queues):
        q = seed.choice([q for q in queues if q])
        merged.append(q.pop(0))
    data = b"".join(merged)
    at = 0
    for cut in cuts:
        link.dataReceived(data[at : at + cut])
        at += cut
    link.dataReceived(data[at:])
    assert got[1] == [{"snapshot": {"name": "D11", "entries": first}}]
    assert got[2] == [{"snapshot": {"name": "D12", "entries": second}}]
    assert [f.parsed()["n"] for f in owner.seen] == list(range(5))
    assert link.assembling == {}


def test_a_directory_subscribed_again_in_pieces_serves_new_pages_with_a_new_version() -> None:
    """After the link comes back, the fresh copy (in pieces) replaces the old; pages say so."""
    h = RouterHarness()
    h.router.directories.page_bytes = BOUND
    conn, t, _ = h.logon()
    h.send(conn, c.GET_DIRECTORY, 20, {"name": DIRECTORY})
    (sub,) = h.upstream()
    _serve_in_pieces(h, sub, {"name": DIRECTORY, "entries": entries(300)})
    (page,) = h.received(t)
    assert page.parsed()["version"] == 0 and page.parsed()["total"] == 300
    h.switch_over()
    for frame in h.upstream():
        if (frame.object_type, frame.event_id) != c.LINK_SUBSCRIBE:
            continue
        topic = frame.parsed()["topic"]
        if topic.startswith("directory:"):
            _serve_in_pieces(h, frame, {"name": DIRECTORY, "entries": entries(400, "v")})
        elif topic.startswith("user:"):
            h.notifier.answer(frame, {"snapshot": {"user": "agent1", "interactions": []}})
        else:
            h.notifier.answer(frame, {"snapshot": {"parameters": {}}})
    h.received(t)  # the switchover notices
    h.send(conn, c.GET_DIRECTORY, 21, {"name": DIRECTORY})
    (page,) = h.received(t)
    body = page.parsed()
    assert (body["version"], body["total"]) == (1, 400)
    assert body["entries"][0]["id"] == "v0"
