"""The fair connection guard: per source address, a global ceiling, bounded memory (issue 15)."""

from __future__ import annotations

import ipaddress
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from smbridge.counters import Counters
from smbridge.transports.guard import ConnectionGuard, source_key

OWN = (ipaddress.ip_network("10.0.0.0/8"),)


def guard(
    limit: int = 20, window: float = 3.0, global_limit: int = 2000
) -> tuple[ConnectionGuard, Clock, Counters]:
    clock, counters = Clock(), Counters()
    g = ConnectionGuard(clock, OWN, limit, window, counters, global_limit=global_limit)
    return g, clock, counters


def refused(counters: Counters) -> tuple[int, int]:
    return (
        counters.get("connections_refused", reason="guard"),
        counters.get("connections_refused", reason="guard-global"),
    )


class PerSource(SynchronousTestCase):
    def test_one_flooding_source_does_not_delay_another(self) -> None:
        """300 connects from one address: 20 let in, 280 refused; another gets in at once."""
        g, _, counters = guard()
        verdicts = [g.admit("192.0.2.1") for _ in range(300)]
        self.assertEqual((verdicts.count(True), verdicts[:20]), (20, [True] * 20))
        self.assertTrue(g.admit("198.51.100.7"))
        self.assertEqual(refused(counters), (280, 0))

    def test_each_source_has_its_own_sliding_window(self) -> None:
        """A source's window slides on its own admissions; others' do not count against it."""
        g, clock, _ = guard(limit=2, window=3.0)
        self.assertTrue(g.admit("192.0.2.1"))
        clock.advance(1.0)
        self.assertEqual([g.admit("192.0.2.1"), g.admit("192.0.2.1")], [True, False])
        self.assertEqual([g.admit("192.0.2.2"), g.admit("192.0.2.2")], [True, True])
        clock.advance(2.0)  # t=3: 192.0.2.1's first admission (t=0) left the window
        self.assertEqual([g.admit("192.0.2.1"), g.admit("192.0.2.1")], [True, False])
        self.assertFalse(g.admit("192.0.2.2"))  # its two (t=1) are still in

    def test_global_ceiling_over_many_sources(self) -> None:
        """Past the global ceiling every untrusted source is refused (guard-global) for a while."""
        g, clock, counters = guard(limit=3, global_limit=10)
        self.assertEqual([g.admit(f"192.0.2.{n}") for n in range(10)], [True] * 10)
        self.assertEqual(g.decide("192.0.2.200"), "guard-global")
        self.assertEqual(g.decide("10.0.0.1"), None)  # own subnet: exempt
        self.assertEqual(refused(counters), (0, 1))
        clock.advance(3.0)
        self.assertTrue(g.admit("192.0.2.200"))

    def test_a_source_over_its_limit_is_refused_for_its_own_reason(self) -> None:
        """A source over its own limit counts as guard even while the global ceiling is reached."""
        g, _, counters = guard(limit=2, global_limit=2)
        g.admit("192.0.2.1")
        g.admit("192.0.2.1")
        self.assertEqual((g.decide("192.0.2.1"), g.decide("192.0.2.2")), ("guard", "guard-global"))
        self.assertEqual(refused(counters), (1, 1))

    def test_refusals_fill_neither_window(self) -> None:
        """A flooding source's refused connections count neither for it nor toward the ceiling."""
        g, clock, _ = guard(limit=2, global_limit=5)
        for _ in range(1000):
            g.admit("192.0.2.1")
        self.assertEqual([g.admit(f"198.51.100.{n}") for n in range(4)], [True, True, True, False])
        clock.advance(3.0)
        self.assertTrue(g.admit("192.0.2.1"))

    def test_trusted_sources_are_exempt_and_not_counted(self) -> None:
        """Own-subnet and trusted-site addresses are neither refused nor counted in the ceiling."""
        g, _, _ = guard(limit=1, global_limit=2)
        g.configure({"BridgeHostTrustedSites": "203.0.113.9"})
        self.assertEqual([g.admit("203.0.113.9") for _ in range(50)], [True] * 50)
        self.assertEqual([g.admit("10.9.9.9") for _ in range(50)], [True] * 50)
        self.assertEqual([g.admit("192.0.2.1"), g.admit("192.0.2.2")], [True, True])

    def test_ipv6_sources_count_by_their_64(self) -> None:
        """IPv6 peers in one /64 share a window; another /64 and IPv4-mapped peers do not."""
        g, _, _ = guard(limit=2)
        self.assertEqual(
            [g.admit("2001:db8:1:1::1"), g.admit("2001:db8:1:1::ffff"), g.admit("2001:db8:1:1::2")],
            [True, True, False],
        )
        self.assertTrue(g.admit("2001:db8:1:2::1"))
        self.assertEqual(source_key("::ffff:192.0.2.1"), source_key("192.0.2.1"))
        self.assertEqual(str(source_key("2001:db8:1:1::9")), "2001:db8:1:1::/64")

    def test_global_limit_changed_at_run_time(self) -> None:
        """A reload may lower or raise the global ceiling; it applies from the next connect."""
        g, _, _ = guard(limit=5, global_limit=10)
        self.assertEqual([g.admit(f"192.0.2.{n}") for n in range(4)], [True] * 4)
        g.global_limit = 4
        self.assertEqual(g.decide("192.0.2.9"), "guard-global")
        g.global_limit = 5
        self.assertEqual(g.decide("192.0.2.9"), None)

    def test_bad_global_limit(self) -> None:
        """A global ceiling below 1 is refused."""
        with self.assertRaises(ValueError):
            ConnectionGuard(Clock(), OWN, 20, 3.0, global_limit=0)


class Memory(SynchronousTestCase):
    def test_table_bounded_by_the_ceiling_under_spraying(self) -> None:
        """100,000 sprayed addresses keep at most global_limit entries; expired ones are evicted."""
        g, clock, counters = guard(limit=20, window=3.0, global_limit=50)
        peak = 0
        for n in range(100_000):
            g.admit(str(ipaddress.IPv4Address(0xC6120000 + n)))  # 198.18.0.0/15, all distinct
            peak = max(peak, len(g.sources))
            if n % 1000 == 999:
                clock.advance(0.125)
        self.assertLessEqual(peak, 50)
        self.assertLessEqual(g.held_timestamps(), 100)
        admitted = 100_000 - sum(refused(counters))
        self.assertEqual(refused(counters)[0], 0)  # each sprayed address is new: only the ceiling
        self.assertEqual(admitted, 50 * 5)  # 50 per 3 s, at t = 0, 3, 6, 9 and 12
        clock.advance(3.0)
        self.assertTrue(g.admit("192.0.2.1"))  # a spray does not outlast its window
        self.assertEqual(len(g.sources), 1)

    def test_spray_locks_out_no_longer_than_the_ceiling(self) -> None:
        """While a spray holds the ceiling others wait for it; a full table never refuses more."""
        g, clock, counters = guard(limit=1, window=3.0, global_limit=100)
        for n in range(100):
            g.admit(f"198.18.0.{n}")
        self.assertEqual(len(g.sources), 100)
        clock.advance(2.5)
        self.assertEqual(g.decide("192.0.2.1"), "guard-global")
        clock.advance(0.5)  # the spray's admissions left the window: the next one gets in
        self.assertEqual(g.decide("192.0.2.1"), None)
        self.assertEqual(len(g.sources), 1)


class Logging(SynchronousTestCase):
    def test_first_refusal_per_source_then_one_summary_per_window(self) -> None:
        """Each source's first refusal is logged (a few per window); the rest go in one summary."""
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        g, clock, _ = guard(limit=1, window=3.0, global_limit=30)

        def events() -> list[tuple[str, Any]]:
            return [
                (e["event"], e.get("peer") or (e["count"], e["guard"], e["guard_global"]))
                for e in logged
                if e.get("event") in ("listener.guard_refused", "listener.guard_summary")
            ]

        for peer in ("192.0.2.1", "192.0.2.2"):
            for _ in range(100):
                g.admit(peer)
        self.assertEqual(
            events(),
            [("listener.guard_refused", "192.0.2.1"), ("listener.guard_refused", "192.0.2.2")],
        )
        for n in range(100):
            g.admit(f"198.51.100.{n}")  # 28 admitted, then the ceiling: 72 guard-global
        self.assertEqual(len(events()), 2 + 3)  # at most 5 first-refusal lines per window
        clock.advance(3.0)  # one summary: all refused in that window, by reason
        self.assertEqual(events()[5:], [("listener.guard_summary", (270, 198, 72))])
        for _ in range(10):
            g.admit("192.0.2.1")  # already logged in this episode: summary only
        clock.advance(3.0)
        self.assertEqual(events()[6:], [("listener.guard_summary", (9, 9, 0))])
        clock.advance(3.0)  # a quiet window: no line, the timer stops, the episode ends
        self.assertEqual((len(events()), clock.getDelayedCalls()), (7, []))
        g.admit("192.0.2.1")
        g.admit("192.0.2.1")
        self.assertEqual(events()[7:], [("listener.guard_refused", "192.0.2.1")])
        g.stop()
        self.assertEqual(clock.getDelayedCalls(), [])


# --- the property: the guard against a naive reference model ----------------------


@dataclass
class Model:
    """Per-source sliding window plus a global ceiling, by brute force over every admission."""

    limit: int
    window: float
    global_limit: int
    admitted: list[tuple[Any, float]] = field(default_factory=list)

    def decide(self, key: Any, trusted: bool, now: float) -> str | None:
        if trusted:
            return None
        live = [(k, t) for k, t in self.admitted if t > now - self.window]
        if sum(1 for k, _ in live if k == key) >= self.limit:
            return "guard"
        if len(live) >= self.global_limit:
            return "guard-global"
        self.admitted.append((key, now))
        return None


PEERS = [
    "192.0.2.1",
    "192.0.2.2",
    "198.51.100.3",
    "::ffff:192.0.2.1",  # the same source as 192.0.2.1
    "2001:db8::1",
    "2001:db8::2",  # the same /64 as 2001:db8::1
    "2001:db8:0:1::1",
    "10.1.2.3",  # own subnet
    "203.0.113.9",  # a trusted site
]
STEPS = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0, 2.5, 3.0]) | st.floats(0, 4),
        st.sampled_from(PEERS),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 5),
    st.sampled_from([0.5, 1.0, 3.0]),
    st.integers(1, 12),
    STEPS,
)
def test_guard_matches_the_reference_model(
    limit: int, window: float, global_limit: int, steps: list[tuple[float, str]]
) -> None:
    """For random connects at random times the guard decides as the reference model does."""
    g, clock, counters = guard(limit, window, global_limit)
    g.configure({"BridgeHostTrustedSites": "203.0.113.9"})
    model = Model(limit, window, global_limit)
    for delay, peer in steps:
        clock.advance(delay)
        trusted = peer in ("10.1.2.3", "203.0.113.9")
        expected = model.decide(source_key(peer), trusted, clock.seconds())
        assert g.decide(peer) == expected, (peer, clock.seconds())
        assert len(g.sources) <= global_limit
    assert sum(refused(counters)) == g.refused


# --- over real sockets ----------------------------------------------------------------


@implementer(IHandshakeListener)
class Handshake(Protocol):
    """Fires ``done`` with True once the TLS handshake completes, False if closed before."""

    def __init__(self) -> None:
        self.done: defer.Deferred[bool] = defer.Deferred()

    def handshakeCompleted(self) -> None:
        if not self.done.called:
            self.done.callback(True)

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.callback(False)


class Silent(Protocol):
    """Connects and sends nothing; ``lost`` fires when the server closes it."""

    def __init__(self) -> None:
        self.lost: defer.Deferred[None] = defer.Deferred()

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


@pytest.mark.integration
class FloodOverSockets(TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def _flood_then_legitimate(self, kind: str) -> Any:
        from smbridge import pki
        from smbridge.testing import poll, start_site

        work = Path(tempfile.mkdtemp(prefix=f"smbridge-guard-fair-{kind}-"))
        extra = {"wss_port": 0} if kind == "wss" else {}
        # 127.0.0.0/8 outside the own subnet: loopback peers are untrusted here.
        site = yield start_site(reactor, work, own_subnets=OWN, guard_window=600.0, **extra)
        self.addCleanup(site.stop)
        port = site.wss_port if kind == "wss" else site.client_port
        attacker = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=("127.0.0.1", 0))
        flood = []
        for _ in range(300):
            flood.append((yield attacker.connect(Factory.forProtocol(Silent))))
        counters = site.bridge.router.counters
        yield poll(lambda: counters.get("connections_refused", reason="guard") == 280, deadline=30)
        legit = wrapClientTLS(
            pki.client_options("localhost", site.pki.ca),
            TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=("127.0.0.2", 0)),
        )
        client = yield legit.connect(Factory.forProtocol(Handshake))
        completed = yield client.done
        self.assertTrue(completed, "the client from 127.0.0.2 was refused on its first try")
        self.assertEqual(refused(counters), (280, 0))
        client.transport.loseConnection()
        for p in flood:
            if p.transport is not None and p.transport.connected:
                p.transport.loseConnection()
            yield p.lost

    def test_tls_listener(self) -> Any:
        """300 connects from 127.0.0.1: 280 refused; 127.0.0.2's TLS handshake succeeds at once."""
        return self._flood_then_legitimate("tls")

    def test_wss_listener(self) -> Any:
        """The same flood on the wss port: 127.0.0.2 completes its TLS handshake at once."""
        return self._flood_then_legitimate("wss")


class Options(SynchronousTestCase):
    def _parse(self, *args: str) -> Any:
        from smbridge.tap import Options as BridgeOptions

        options = BridgeOptions()
        work = tempfile.mkdtemp(prefix="smbridge-tap-")
        options.parseOptions(["--demo", f"--work-path={work}", *args])
        return options.config

    def test_global_limit_flag(self) -> None:
        """--guard-global-limit reaches the config (default 2000) and the bridge's guard."""
        from twisted.python.usage import UsageError

        from smbridge.service import BridgeService

        self.assertEqual(self._parse().guard_global_limit, 2000)
        config = self._parse("--guard-global-limit=300")
        self.assertEqual(config.guard_global_limit, 300)
        self.assertEqual(BridgeService(config, Clock()).guard.global_limit, 300)
        for bad in ("0", "100001"):
            with self.assertRaisesRegex(UsageError, "--guard-global-limit must be"):
                self._parse(f"--guard-global-limit={bad}")

    def test_global_limit_in_the_config_file(self) -> None:
        """The configuration file takes guard-global-limit like the other options."""
        work = Path(tempfile.mkdtemp(prefix="smbridge-tap-file-"))
        (work / "bridge.yaml").write_text("guard-global-limit: 750\n")
        config = self._parse(f"--config={work / 'bridge.yaml'}")
        self.assertEqual(config.guard_global_limit, 750)
