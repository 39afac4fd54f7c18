"""An open tunnel connection keeps no per-connection state it will not use (slim.py)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import TestCase

from smbridge.config import TunnelSettings
from smbridge.testing import poll, start_site
from smbridge.tunnel.slim import LeanServerProtocol

# Per-connection objects Autobahn makes that an idle tunnel connection never uses.
UNUSED = (
    "_results",
    "_valid_events",
    "utf8validator",
    "websocket_protocols",
    "websocket_extensions",
    "websocket_extensions_in_use",
)


@pytest.mark.integration
class OpenConnectionState(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_open_connection_drops_unused_state_and_its_dict_is_small(self) -> Any:
        """After the upgrade the event tables, the UTF-8 validator and the empty extension
        lists are not the connection's own, its __dict__ has at most 21 entries (the
        464-byte size), and they still read as Autobahn's values."""
        from test_tunnel_slim import open_and_log_on

        work = Path(tempfile.mkdtemp(prefix="smbridge-lean-"))
        site = yield start_site(reactor, work, ws_port=0, tunnel=TunnelSettings(ping_interval=0))
        self.addCleanup(site.stop)
        sock = yield threads.deferToThread(open_and_log_on, site.ws_port)
        conns = site.bridge.connections.connections
        self.addCleanup(poll, lambda: not conns)
        self.addCleanup(sock.close)
        yield poll(lambda: any(getattr(x, "ws", None) for x in conns))
        ws = next(x.ws for x in conns if getattr(x, "ws", None))
        own = vars(ws)
        self.assertFalse(set(UNUSED) & set(own), sorted(own))
        self.assertLessEqual(len(own), 21, sorted(own))
        self.assertLessEqual(sys.getsizeof(own), 464)
        self.assertEqual(tuple(ws._valid_events), ("message",))
        self.assertEqual(list(ws.websocket_extensions_in_use), [])
        self.assertEqual(list(ws.websocket_protocols), [])


def test_validator_and_event_results_are_made_on_first_use() -> None:
    """A connection without its own validator or event results gets fresh ones on first
    use, each its own, and Autobahn's ``on``/``fire`` work with them."""
    a, b = LeanServerProtocol(), LeanServerProtocol()
    for p in (a, b):
        del p.__dict__["_results"], p.__dict__["_valid_events"]
    assert "utf8validator" not in vars(a)
    va = a.utf8validator
    assert va is a.utf8validator and va is not b.utf8validator
    assert va.validate(b"caf\xc3\xa9")[0]
    got: list[Any] = []
    a.on("message", got.append)
    a.fire("message", b"x")
    assert got == [b"x"] and "message" in a._results
    assert b._results == {"message": None} and b._results is not a._results
    with pytest.raises(RuntimeError, match="Invalid event"):
        b.on("nonesuch", got.append)
