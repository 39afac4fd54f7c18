"""One roster for a Notifier pair: halves exchanged, retirements shared and kept, primary first."""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from smbridge.codec import catalog as c
from smbridge.codec.frames import Decoder, Frame
from smbridge.errors import BadRequest
from smbridge.notifier.demo import demo_site
from smbridge.notifier.model import Notifier
from smbridge.notifier.pair import BACKUP, PRIMARY, Pair
from smbridge.roster.selection import order_roster, parse_rules, rule_for_user


class Link:
    """A bridge link as the Notifier core sees it; keeps the RosterChanged it is sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_event(self, sub_id: int, frame: bytes) -> None:
        self.sent.append(frame)

    def last_roster(self) -> dict[str, bool]:
        frames = [f for raw in self.sent for f in Decoder().feed(raw) if isinstance(f, Frame)]
        rosters = [
            f.parsed() for f in frames if (f.object_type, f.event_id) == c.LINK_ROSTER_CHANGED
        ]
        return {e["name"]: e["available"] for e in rosters[-1]["roster"]}


class Wire:
    """The two control APIs of a pair, in memory: ``a`` is primary, ``b`` backup."""

    def __init__(self, clock: Clock, paths: dict[str, Path | None] | None = None) -> None:
        self.clock = clock
        self.up = {"a": True, "b": True}
        self.exchanges = 0
        self.n: dict[str, Notifier] = {}
        for side, role in (("a", PRIMARY), ("b", BACKUP)):
            self.start(side, role, (paths or {}).get(side))

    def start(self, side: str, role: str, path: Path | None = None) -> Notifier:
        """Start (or restart) one side: a new Notifier core reading its roster file."""
        n = Notifier(demo_site(cic_name=f"cic-{side}"), self.clock)
        n.pair = Pair(self.clock, role, f"{'b' if side == 'a' else 'a'}:5597")
        n.share.path = path
        n.load_roster()
        n.share.exchange = functools.partial(self._exchange, side)
        self.n[side] = n
        return n

    def _exchange(self, sender: str, half: dict[str, Any]) -> defer.Deferred[Any]:
        other = "b" if sender == "a" else "a"
        if not self.up[other]:
            return defer.fail(ConnectionRefusedError(other))
        self.exchanges += 1
        return defer.succeed(self.n[other].share.receive(half))

    def settle(self) -> None:
        for _ in range(5):
            self.clock.advance(0)

    def roster(self, side: str) -> dict[str, bool]:
        return {e["name"]: e["available"] for e in self.n[side].roster()}


def info(name: str, kind: str = "off-server", **extra: Any) -> dict[str, Any]:
    body = {"name": name, "fqdn": name, "kind": kind, "location": "Indianapolis"}
    return {**body, "ports": {"tls": 3952}, "accept": "default", **extra}


def test_a_bridge_registered_with_the_primary_is_available_on_the_backup() -> None:
    """Registered at the primary, an unlisted bridge is listed available by the backup too."""
    w = Wire(Clock())
    pinned = Link()
    w.n["b"].register(info("sm-b", "on-server", pinned=True), pinned)
    w.settle()
    assert w.roster("b") == {"bridge1": False, "sm-b": True}
    w.n["a"].register(info("sm1"), Link())
    w.settle()
    assert w.roster("b") == w.roster("a") == {"bridge1": False, "sm-b": True, "sm1": True}
    assert pinned.last_roster()["sm1"] is True  # the backup's bridge is told at once
    assert w.n["b"].state()["pairRoster"]["peerBridges"] == ["sm1"]


def test_a_lost_link_and_an_accept_change_show_on_both_sides() -> None:
    """Availability follows the bridge's link and accept mode on either side."""
    w = Wire(Clock())
    link = Link()
    w.n["a"].register(info("sm1"), link)
    w.settle()
    w.n["a"].bridge_changed(link, {"accept": "maintenance"})
    w.settle()
    assert w.roster("b")["sm1"] is False
    w.n["a"].bridge_changed(link, {"accept": "default"})
    w.settle()
    assert w.roster("b")["sm1"] is True
    w.n["a"].link_lost(link)
    w.settle()
    assert w.roster("b")["sm1"] is False and w.roster("a")["sm1"] is False


def test_a_bridge_that_moved_to_the_other_side_is_live_there() -> None:
    """After a switchover the bridge's live registration wins over its stale one."""
    w = Wire(Clock())
    old = Link()
    w.n["a"].register(info("sm1"), old)
    w.settle()
    w.n["a"].link_lost(old)
    w.clock.advance(1)
    w.n["b"].pair.set_role(PRIMARY, "test")
    w.n["b"].register(info("sm1", ports={"tls": 4000}), Link())
    w.settle()
    for side in "ab":
        (entry,) = [e for e in w.n[side].roster() if e["name"] == "sm1"]
        assert (entry["available"], entry["ports"]["tls"]) == (True, 4000), side


def test_a_retirement_on_one_side_shows_on_the_other_and_survives_restarts(
    tmp_path: Path,
) -> None:
    """Retired on the primary, gone on both; restarting either side keeps it retired."""
    paths: dict[str, Path | None] = {s: tmp_path / s / f"roster-{s}.json" for s in "ab"}
    w = Wire(Clock(), paths)
    link = Link()
    w.n["b"].register(info("sm2", pinned=True), link)
    w.settle()
    w.n["b"].link_lost(link)
    w.settle()
    with pytest.raises(BadRequest):  # a bridge live on the other side does not retire
        live = Link()
        w.n["b"].register(info("sm3", pinned=True), live)
        w.settle()
        w.n["a"].retire_bridge("sm3")
    w.clock.advance(5)
    w.n["a"].retire_bridge("sm2")
    w.n["a"].retire_bridge("bridge1")  # a site bridge that never registered
    w.settle()
    assert "sm2" not in w.roster("b") and "bridge1" not in w.roster("b")
    assert w.n["b"].state()["pairRoster"]["retired"] == ["bridge1", "sm2"]
    for side in "ab":  # each side alone reads it back from its own file
        w.up = {"a": False, "b": False}
        w.start(side, PRIMARY if side == "a" else BACKUP, paths[side])
        w.settle()
        assert set(w.roster(side)) == {"sm3"}, side
        assert w.roster(side)["sm3"] is False, side  # kept, down, from the file
    w.up = {"a": True, "b": True}
    w.clock.advance(1)
    w.n["a"].register(info("sm2"), Link())  # registering again brings it back, both sides
    w.settle()
    assert w.roster("b")["sm2"] is True


def test_the_backup_learns_a_retirement_made_while_it_was_unreachable(tmp_path: Path) -> None:
    """A half that could not be sent goes again after the next probe the peer answers."""
    w = Wire(Clock())
    link = Link()
    w.n["a"].register(info("sm2"), link)
    w.settle()
    w.n["a"].link_lost(link)
    w.settle()
    w.up["b"] = False
    w.clock.advance(1)
    w.n["a"].retire_bridge("sm2")
    w.settle()
    assert "sm2" in w.roster("b")
    w.up["b"] = True
    w.n["a"].share.peer_alive()
    w.settle()
    assert "sm2" not in w.roster("b")


def test_a_silent_peer_s_bridges_count_as_down_until_it_answers() -> None:
    """The detection time of silence marks the peer's bridges down; its next half restores them."""
    w = Wire(Clock())
    w.n["a"].register(info("sm1"), Link())
    w.settle()
    w.n["b"].share.peer_lost()
    assert w.roster("b")["sm1"] is False
    assert w.n["b"].state()["pairRoster"]["peerLive"] is False
    w.n["b"].share.peer_alive()  # it answers again: the same process, the same half
    w.settle()
    assert w.roster("b")["sm1"] is True


def test_pair_probe_results_reach_the_roster_listener() -> None:
    """Pair.on_peer says True after an answered probe, False once silent for the detection."""
    clock = Clock()
    alive = [True]
    seen: list[bool] = []

    def probe() -> defer.Deferred[Any]:
        return defer.succeed(None) if alive[0] else defer.fail(OSError("refused"))

    pair = Pair(clock, PRIMARY, "b:5597", probe=probe, detection=2.0, interval=0.5)
    pair.on_peer(seen.append)
    pair.start()
    clock.advance(0.5)
    assert seen == [True]
    alive[0] = False
    for _ in range(3):
        clock.advance(0.5)
    assert seen == [True]
    clock.advance(0.5)
    assert seen == [True, False]
    pair.stop()


def test_a_late_half_does_not_replace_a_newer_one() -> None:
    """Halves carry epoch and seq: an older one from the same process is ignored."""
    w = Wire(Clock())
    link = Link()
    w.n["a"].register(info("sm1"), link)
    w.settle()
    stale = w.n["a"].share.half().to_wire()
    w.n["a"].link_lost(link)
    w.settle()
    w.n["b"].share.receive(stale)
    assert w.roster("b")["sm1"] is False
    restarted = {**stale, "epoch": "another-process", "seq": 0}
    w.n["b"].share.receive(restarted)  # a new process: taken whatever its seq
    assert w.roster("b")["sm1"] is True


@pytest.mark.parametrize(
    "half",
    [
        {},
        {"epoch": "x", "seq": "1", "cic": "a"},
        {"epoch": "x", "seq": 1, "cic": "a", "bridges": [{"name": "b"}]},
        {"epoch": "x", "seq": 1, "cic": "a", "retired": {"b": "yesterday"}},
    ],
)
def test_a_malformed_half_is_refused(half: dict[str, Any]) -> None:
    """A half missing epoch/seq, or with malformed bridges or retirements, is a BadRequest."""
    w = Wire(Clock())
    with pytest.raises(BadRequest):
        w.n["b"].share.receive(half)


def test_the_primary_server_s_on_server_bridge_comes_before_the_backup_s() -> None:
    """Entries name their server and its role; every ordering puts the primary's first."""
    w = Wire(Clock())
    w.n["a"].register(info("sm-a", "on-server", pinned=True), Link())
    w.n["b"].register(info("sm-b", "on-server", pinned=True), Link())
    w.n["a"].register(info("sm1"), Link())
    w.settle()
    for side in "ab":
        cics = {e["name"]: e.get("cic") for e in w.n[side].roster()}
        assert cics["sm-a"] == {"name": "cic-a", "role": PRIMARY}, side
        assert cics["sm-b"] == {"name": "cic-b", "role": BACKUP}, side
        assert cics["sm1"] is None, side  # a follower is wherever the primary is
    rule = rule_for_user(parse_rules(None), "Indianapolis")
    for seed in range(40):
        groups = order_roster(w.n["b"].roster(), rule, (), random.Random(seed))
        names = [e["name"] for g in groups for e in g]
        assert names.index("sm-a") < names.index("sm-b"), seed
    w.n["a"].pair.set_role(BACKUP, "test")  # roles swap: so does the order
    w.n["b"].pair.set_role(PRIMARY, "test")
    groups = order_roster(w.n["a"].roster(), rule, (), random.Random(1))
    names = [e["name"] for g in groups for e in g]
    assert names.index("sm-b") < names.index("sm-a")


def test_tap_roster_store_defaults_to_one_file_per_cic_server(tmp_path: Path) -> None:
    """WORK/roster-CIC.json by default (a pair may share WORK); --roster-store overrides."""
    from smbridge.notifier.tap import Options

    o = Options()
    o.parseOptions(["--demo", "--work-path", str(tmp_path), "--cic-name", "cic-b"])
    assert o.config.roster_file() == tmp_path / "roster-cic-b.json"
    o = Options()
    o.parseOptions(["--demo", "--roster-store", str(tmp_path / "r.json")])
    assert o.config.roster_file() == tmp_path / "r.json"
