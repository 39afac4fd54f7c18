"""The drain: Migrate to every session, spread over time, roster ordered per user."""

from __future__ import annotations

import random
from typing import Any

import pytest
from twisted.internet.testing import StringTransport

from smbridge.codec import Kind
from smbridge.codec import catalog as c
from smbridge.roster.drain import Drainer, migrate_frame, roster_for
from smbridge.session.session import EndReason
from smbridge.testing import RouterHarness, decode_all


def entry(name: str, kind: str, location: str, available: bool = True) -> dict[str, Any]:
    return {"name": name, "fqdn": f"{name}.example", "kind": kind, "location": location,
            "available": available, "ports": {"tls": 3952}}  # fmt: skip


ROSTER = [
    entry("sm1", "on-server", "Indianapolis"),  # this bridge
    entry("off-ind", "off-server", "Indianapolis"),
    entry("off-lon", "off-server", "London"),
    entry("off-down", "off-server", "London", available=False),
    entry("on-par", "on-server", "Paris"),
]
RULES = {"locations": {"London": {"prioritized": ["<This Location>"], "excluded": ["Paris"]}}}


def harness(users: int = 3) -> tuple[RouterHarness, list[StringTransport]]:
    h = RouterHarness()
    h.connector.registered["roster"] = ROSTER
    h.connector.registered["selectionRule"] = RULES
    transports = []
    for n in range(users):
        _, t, _ = h.logon(f"agent{n + 1}")
        t.clear()
        transports.append(t)
    return h, transports


def migrates(h: RouterHarness, t: StringTransport) -> list[dict[str, Any]]:
    h.clock.advance(0)
    frames = decode_all(t.value())
    t.clear()
    return [
        f.parsed()
        for f in frames
        if f.kind == Kind.NOTIFICATION and (f.object_type, f.event_id) == c.MIGRATE
    ]


def test_start_switches_to_maintenance_and_spreads_the_migrates() -> None:
    """Each session gets one Migrate at its own moment within the spread; mode is maintenance."""
    h, transports = harness(users=20)
    drainer = Drainer(h.clock, h.router, random.Random(7))
    assert drainer.start(30.0) == 20
    assert h.router.accept_mode == "maintenance"
    assert (drainer.active, drainer.pending) == (True, 20)
    moments: list[float] = []
    for step in range(31):
        for t in transports:
            for body in migrates(h, t):
                assert body["reason"] == "drain"
                moments.append(h.clock.seconds())
        if step < 30:
            h.clock.advance(1.0)
    assert len(moments) == 20  # each session exactly once
    assert (drainer.active, drainer.pending, drainer.sent) == (False, 0, 20)
    assert len(set(moments)) > 10  # spread out, not in one burst
    assert 0 < min(moments) and max(moments) <= 30.0
    assert h.router.counters.get("migrations", reason="drain") == 20


def test_roster_is_ordered_per_user_without_this_or_unavailable_bridges() -> None:
    """The Migrate roster follows each user's rule; this bridge and down bridges are left out."""
    h, (t_ind, t_lon) = harness(users=2)
    london = next(s for s in h.registry if s.info.user_id == "agent2")
    london.info.location = "London"
    Drainer(h.clock, h.router, random.Random(1)).start(0)
    (ind,) = migrates(h, t_ind)
    (lon,) = migrates(h, t_lon)
    ind_names = [e["name"] for e in ind["roster"]]
    assert ind_names[0] == "off-ind" and set(ind_names) == {"off-ind", "off-lon", "on-par"}
    assert ind_names[-1] == "on-par"  # other on-server bridges come last
    assert [e["name"] for e in lon["roster"]] == ["off-lon", "off-ind"]  # Paris excluded
    assert roster_for(h.router, london) == lon["roster"]


def test_sessions_that_ended_before_their_turn_are_skipped() -> None:
    """A session that ends before its moment gets nothing and is counted as skipped."""
    h, transports = harness(users=3)
    drainer = Drainer(h.clock, h.router, random.Random(3))
    drainer.start(10.0)
    for s in list(h.registry):
        if s.info.user_id == "agent2":
            s.end(EndReason.LOGOUT, notify=False)
    h.clock.advance(10.0)
    assert [len(migrates(h, t)) for t in transports] == [1, 0, 1]
    assert (drainer.sent, drainer.skipped, drainer.active) == (2, 1, False)


def test_cancel_stops_the_rest() -> None:
    """cancel() sends no further Migrates, reports how many were left, keeps maintenance."""
    h, transports = harness(users=10)
    drainer = Drainer(h.clock, h.router, random.Random(5))
    drainer.start(10.0)
    h.clock.advance(5.0)
    told = sum(len(migrates(h, t)) for t in transports)
    assert 0 < told < 10 and drainer.pending == 10 - told
    assert drainer.cancel() == 10 - told
    assert (drainer.active, drainer.pending, drainer._call) == (False, 0, None)
    h.clock.advance(10.0)
    assert sum(len(migrates(h, t)) for t in transports) == 0
    assert h.router.accept_mode == "maintenance"


def test_restart_replaces_the_schedule() -> None:
    """Starting again while draining gives every current session a moment in the new spread."""
    h, transports = harness(users=4)
    drainer = Drainer(h.clock, h.router, random.Random(9))
    drainer.start(100.0)
    assert drainer.start(1.0, reason="shutdown") == 4
    h.clock.advance(1.0)
    bodies = [b for t in transports for b in migrates(h, t)]
    assert [b["reason"] for b in bodies] == ["shutdown"] * 4
    assert (drainer.active, drainer._call) == (False, None)


def test_empty_bridge_and_bad_spread() -> None:
    """A drain with no sessions is done at once; a negative spread is refused."""
    h, _ = harness(users=0)
    drainer = Drainer(h.clock, h.router)
    assert (drainer.start(30.0), drainer.active, drainer._call) == (0, False, None)
    with pytest.raises(ValueError):
        drainer.start(-1.0)


def test_migrate_frame() -> None:
    """migrate_frame encodes a Migrate notification with the roster and the reason."""
    (frame,) = decode_all(migrate_frame([{"name": "a"}], "shutdown"))
    assert (frame.kind, (frame.object_type, frame.event_id)) == (Kind.NOTIFICATION, c.MIGRATE)
    assert frame.parsed() == {"roster": [{"name": "a"}], "reason": "shutdown"}


def test_bridge_service_has_a_drainer() -> None:
    """BridgeService wires a Drainer to its router and a guard with the configured numbers."""
    import ipaddress
    from pathlib import Path

    from twisted.internet.task import Clock

    from smbridge.config import BridgeConfig, TLSFiles
    from smbridge.router.router import BridgeIdentity
    from smbridge.service import BridgeService

    config = BridgeConfig(
        identity=BridgeIdentity("sm1", "localhost"),
        tls=TLSFiles(Path("a"), Path("b"), Path("c")),
        guard_limit=7,
        guard_window=2.0,
        own_subnets=(ipaddress.ip_network("10.0.0.0/8"),),
    )
    bridge = BridgeService(config, Clock())
    assert bridge.drainer.router is bridge.router and not bridge.drainer.active
    assert (bridge.guard.limit, bridge.guard.window) == (7, 2.0)
    assert bridge.guard.configure in bridge.router.parameter_listeners
    off = BridgeService(
        BridgeConfig(identity=config.identity, tls=config.tls, guard_limit=0), Clock()
    )
    assert off.guard.limit == 0 and all(off.guard.admit("192.0.2.1") for _ in range(50))


def test_drain_is_logged_at_start_and_end() -> None:
    """roster.drain_started names the count and spread; roster.drain_done the sent and skipped."""
    from twisted.internet.testing import EventLoggingObserver
    from twisted.logger import globalLogPublisher

    logged = EventLoggingObserver()
    globalLogPublisher.addObserver(logged)
    try:
        h, _ = harness(users=2)
        drainer = Drainer(h.clock, h.router, random.Random(2))
        drainer.start(4.0)
        h.clock.advance(4.0)
    finally:
        globalLogPublisher.removeObserver(logged)
    events = {e["event"]: e for e in logged if str(e.get("event", "")).startswith("roster.drain")}
    started, done = events["roster.drain_started"], events["roster.drain_done"]
    assert (started["count"], started["spread"], done["sent"], done["skipped"]) == (2, 4.0, 2, 0)


def test_nowhere_to_go_still_gets_a_migrate() -> None:
    """With no other bridge available the Migrate's roster is empty and counted stranded."""
    h, (t,) = harness(users=1)
    h.connector.registered["roster"] = [ROSTER[0], ROSTER[3]]  # this bridge and a down one
    drainer = Drainer(h.clock, h.router, random.Random(4))
    drainer.start(0)
    assert migrates(h, t) == [{"roster": [], "reason": "drain"}]
    assert (drainer.sent, drainer.stranded) == (1, 1)
