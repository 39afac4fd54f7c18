"""Client discovery: the roster cache, the attempt order and logging on anywhere."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from smbridge.client.discovery import logon_anywhere
from smbridge.client.protocol import ClientError
from smbridge.client.roster_cache import RosterCache
from smbridge.roster.attempts import attempt_groups, logon_order, reconnect_order
from smbridge.testing import start_site


def entry(name: str, kind: str, location: str, port: int = 3952) -> dict[str, Any]:
    return {
        "name": name,
        "fqdn": f"{name}.example",
        "kind": kind,
        "location": location,
        "ports": {"tls": port},
        "available": True,
    }


CACHED = {
    "roster": [
        entry("on-indy", "on-server", "Indy"),
        entry("off-indy", "off-server", "Indy"),
        entry("off-london", "off-server", "London", 4000),
    ],
    "selectionRule": None,
    "location": "London",
}


def hosts(targets: list[dict[str, Any]]) -> list[str]:
    return [f"{t['host']}:{t['port']}" for t in targets]


def test_cache_round_trip_replaces_and_keeps_sites_apart(tmp_path: Path) -> None:
    """A save replaces the site's file whole; each typed host has its own file."""
    cache = RosterCache(tmp_path)
    cache.save("SM.example", {**CACHED, "sessionId": "x"})
    cache.save("other.example", {"roster": [], "location": None})
    assert cache.load("sm.example") == CACHED
    cache.save("sm.example", {"roster": [entry("b", "off-server", "Indy")], "location": "Indy"})
    assert cache.load("sm.example") == {
        "roster": [entry("b", "off-server", "Indy")],
        "selectionRule": None,
        "location": "Indy",
    }
    assert cache.load("other.example") == {"roster": [], "selectionRule": None, "location": None}
    assert sorted(p.name.startswith("roster-") for p in tmp_path.iterdir()) == [True, True]
    assert cache.load("never.example") is None


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"roster": 3}', b"\xff\xfe"])
def test_corrupt_cache_is_ignored_with_a_warning(tmp_path: Path, content: bytes) -> None:
    """A corrupt cache file gives None and one warning; the next save replaces it."""
    cache = RosterCache(tmp_path)
    cache.path("sm").write_bytes(content)
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        assert cache.load("sm") is None
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert [e.get("event") for e in events] == ["client.roster_cache.corrupt"]
    cache.save("sm", CACHED)
    assert json.loads(cache.path("sm").read_text())["location"] == "London"


def test_attempt_order_from_the_cache() -> None:
    """The typed host first, then the user's groups, then its raw addresses; each once."""
    groups = attempt_groups(CACHED, "sm", 3952, ["10.0.0.1", "10.0.0.1"], random.Random(1))
    assert [hosts(g) for g in groups] == [
        ["off-london.example:4000"],
        ["off-indy.example:3952"],
        ["on-indy.example:3952"],
        ["10.0.0.1:3952"],
    ]
    order = logon_order(groups, "sm", 3952)
    assert hosts(order) == [
        "sm:3952",
        "off-london.example:4000",
        "off-indy.example:3952",
        "on-indy.example:3952",
        "10.0.0.1:3952",
    ]
    assert hosts(reconnect_order(groups, 3)) == ["off-london.example:4000"] * 4 + hosts(order)[2:]


def test_no_cache_means_the_typed_host_and_its_addresses() -> None:
    """Without a cache the attempts are the typed host and its raw addresses."""
    groups = attempt_groups(None, "sm", 3952, ["10.0.0.1", "10.0.0.2"], random.Random(2))
    assert sorted(hosts(groups[0])) == ["10.0.0.1:3952", "10.0.0.2:3952"] and len(groups) == 1
    assert attempt_groups(None, "sm", 3952, [], random.Random(2)) == [
        [{"host": "sm", "port": 3952, "name": None}]
    ]


class FakeClient:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.closed = False

    def logon(self, user: str, password: str, **kw: Any) -> defer.Deferred[Any]:
        if isinstance(self.answer, Exception):
            return defer.fail(self.answer)
        return defer.succeed(self.answer)

    def close(self) -> defer.Deferred[None]:
        self.closed = True
        return defer.succeed(None)


def run(answers: dict[str, Any], cache: RosterCache | None = None) -> tuple[list[str], Any]:
    dialed: list[str] = []

    def dial(t: dict[str, Any]) -> defer.Deferred[Any]:
        key = f"{t['host']}:{t['port']}"
        dialed.append(key)
        answer = answers.get(key, ConnectionRefusedError(key))
        if isinstance(answer, ConnectionRefusedError):
            return defer.fail(answer)
        return defer.succeed(FakeClient(answer))

    d = logon_anywhere(
        None,
        "tls://sm:3952",
        "agent1",
        "pw",
        cache=cache,
        dial=dial,
        resolve=lambda h, p: defer.succeed(["10.0.0.1"]),
        rng=random.Random(3),
    )
    result: list[Any] = []
    d.addBoth(result.append)
    return dialed, result[0]


REDIRECT = ClientError(
    "redirect",
    "go",
    {"code": "redirect", "reason": "off-server-available", "location": "London", **CACHED},
)


def test_redirect_is_followed_and_the_roster_cached(tmp_path: Path) -> None:
    """A redirect's roster gives the next targets; the successful logon saves the roster."""
    cache = RosterCache(tmp_path)
    reply = {"sessionId": "s1", **CACHED}
    dialed, result = run({"sm:3952": REDIRECT, "off-london.example:4000": reply}, cache)
    assert dialed == ["sm:3952", "off-london.example:4000"]
    assert result[1] == reply and cache.load("sm") == CACHED
    # Next time the cache leads: the typed host is still first, then London.
    dialed, result = run({"off-london.example:4000": reply}, cache)
    assert dialed == ["sm:3952", "off-london.example:4000"]


def test_logon_failure_stops_and_everything_else_is_tried_once() -> None:
    """logon-failed ends the search at once; otherwise each target is tried once."""
    failed = ClientError("logon-failed", "no", {"code": "logon-failed", "reason": "x"})
    dialed, result = run({"sm:3952": REDIRECT, "off-london.example:4000": failed})
    assert dialed == ["sm:3952", "off-london.example:4000"]
    assert result.value.code == "logon-failed"
    dialed, result = run({"sm:3952": REDIRECT})
    assert dialed == [
        "sm:3952",
        "off-london.example:4000",
        "off-indy.example:3952",
        "on-indy.example:3952",
        "10.0.0.1:3952",
    ]
    assert result.value.code == "no-bridge" and len(result.value.body["attempts"]) == 5


class LogonAnywhereEndToEnd(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_real_bridge_logon_writes_the_cache(self) -> None:
        """Over real TLS the typed host takes the logon and the roster cache is written."""
        work = Path(tempfile.mkdtemp(prefix="smbridge-discovery-"))
        site = yield start_site(reactor, work)
        self.addCleanup(site.stop)
        cache = RosterCache(work / "cache")
        client, reply = yield logon_anywhere(
            reactor,
            f"tls://localhost:{site.client_port}",
            "agent1",
            "demo",
            cache=cache,
            ca=site.pki.ca,
        )
        self.assertTrue(reply["sessionId"].startswith("sm1-"))
        self.assertEqual(cache.load("localhost")["roster"], reply["roster"])
        yield client.logoff()
