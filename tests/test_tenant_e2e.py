"""Tenants end to end: real TLS clients, the real bridge and the real reference Notifier."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from smbridge.admin.metrics import bridge_registry, exposition
from smbridge.admin.status import status
from smbridge.client import ClientError, connect
from smbridge.codec import catalog as c
from smbridge.notifier.demo import demo_site_dict
from smbridge.notifier.site import Site
from smbridge.testing import http_json, poll, start_site

ACME = ["agent1", "agent2", "agent3"]
GLOBEX = ["agent4", "agent5", "agent6"]


def tenant_site(acme: dict[str, Any], globex: dict[str, Any] | None = None) -> dict[str, Any]:
    data = demo_site_dict()
    data["traffic"] = {**data["traffic"], "callsPerSecond": 0}
    data["tenants"] = [
        {"name": "acme", "users": ACME, "limits": acme},
        {"name": "globex", "users": GLOBEX, "limits": globex or {}},
    ]
    return data


@pytest.mark.integration
class TenantsEndToEnd(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def _start(self, data: dict[str, Any]) -> Any:
        self.data = data
        work = Path(tempfile.mkdtemp(prefix="smbridge-tenants-"))
        self.site = yield start_site(reactor, work, site=Site.from_dict(data))
        self.addCleanup(self.site.stop)

    @defer.inlineCallbacks
    def _logon(self, user: str, client_id: str | None = None) -> Any:
        client = yield connect(
            reactor, f"tls://localhost:{self.site.client_port}", ca=self.site.pki.ca
        )
        self.addCleanup(client.close)
        yield client.logon(user, "demo", client_id=client_id or f"{user}-pc")
        return client

    @defer.inlineCallbacks
    def _refused(self, user: str, client_id: str | None = None) -> Any:
        with pytest.raises(ClientError) as e:
            yield self._logon(user, client_id)
        assert e.value.code == "tenant-limit"
        return e.value.body

    def _status(self) -> dict[str, Any]:
        return {t["tenant"]: t for t in status(self.site.bridge)["tenants"]}

    @defer.inlineCallbacks
    def test_sessions_limit_other_tenant_and_live_raise(self) -> Any:
        """acme at 2 sessions: the third logon is refused naming "sessions", globex logs
        on, PUT /api/site raising the limit lets the next one in; status and metrics show it."""
        yield self._start(tenant_site({"sessions": 2}))
        yield self._logon("agent1")
        yield self._logon("agent2")
        body = yield self._refused("agent3")
        assert (body["tenant"], body["limit"], body["max"]) == ("acme", "sessions", 2)
        assert "sessions limit" in body["message"]
        yield self._logon("agent4")  # another tenant: unaffected
        use = self._status()
        assert use["acme"]["limits"]["sessions"] == 2
        assert use["acme"]["use"]["sessions"] == 2
        assert use["globex"]["use"]["sessions"] == 1
        scrape = exposition(bridge_registry(self.site.bridge)).decode()
        assert 'smbridge_tenant_sessions{tenant="acme"} 2.0' in scrape
        assert 'smbridge_tenant_limit{limit="sessions",tenant="acme"} 2.0' in scrape
        assert 'smbridge_tenant_refusals_total{limit="sessions",tenant="acme"} 1.0' in scrape

        raised = copy.deepcopy(self.data)
        raised["tenants"][0]["limits"] = {"sessions": 3}
        code, answer = yield http_json(reactor, "PUT", f"{self.site.control_url}/api/site", raised)
        assert code == 200 and "tenants" in answer["changed"], answer
        yield self._logon("agent3")
        _, site_wide = yield http_json(reactor, "GET", f"{self.site.control_url}/api/tenants")
        acme = next(t for t in site_wide["tenants"] if t["tenant"] == "acme")
        assert acme["limits"]["sessions"] == 3
        assert acme["use"]["sessions"] == 3 and acme["use"]["reserved"] == 0
        assert acme["refusals"] == {"sessions": 1}
        # The bridge follows the new limits too (TenantsChanged).
        yield poll(lambda: self._status()["acme"]["limits"]["sessions"] == 3, deadline=5)

    @defer.inlineCallbacks
    def test_logoff_frees_a_place(self) -> Any:
        """A session that ends gives its place back (SessionClosed reaches the Notifier)."""
        yield self._start(tenant_site({"sessions": 1}))
        first = yield self._logon("agent1")
        yield self._refused("agent2")
        yield first.logoff()
        yield self._logon("agent2")

    @defer.inlineCallbacks
    def test_sessions_per_user_and_logon_rate(self) -> Any:
        """acme: one session per user; globex: a burst of two logons, then a slow rate."""
        yield self._start(
            tenant_site({"sessionsPerUser": 1}, {"logonsPerSecond": 0.05, "logonBurst": 2})
        )
        yield self._logon("agent1", "pc-1")
        body = yield self._refused("agent1", "pc-2")
        assert (body["tenant"], body["limit"], body["max"]) == ("acme", "sessionsPerUser", 1)
        yield self._logon("agent2", "pc-1")  # another acme user is fine
        yield self._logon("agent4")
        yield self._logon("agent5")
        body = yield self._refused("agent6")
        assert (body["tenant"], body["limit"], body["max"]) == ("globex", "logonsPerSecond", 0.05)
        assert self._status()["globex"]["use"]["logonsPerSecond"] == pytest.approx(0.2)

    @defer.inlineCallbacks
    def test_watches_limit_per_tenant(self) -> Any:
        """acme may hold 3 watches in all: the 4th of any acme session is refused "watches";
        globex is unaffected; an unwatch makes room again."""
        yield self._start(tenant_site({"watches": 3}))
        # Known from the Register answer before anyone logs on.
        assert self._status()["acme"]["limits"] == {
            "sessions": None,
            "sessionsPerUser": None,
            "logonsPerSecond": None,
            "watches": 3,
        }
        one = yield self._logon("agent1")
        two = yield self._logon("agent2")
        yield one.watch_queue("Sales")
        yield one.request(c.WATCH_STATUS, {"users": ["agent7", "agent8"]})
        with pytest.raises(ClientError) as e:
            yield two.watch_queue("Support")
        assert e.value.code == "tenant-limit"
        assert (e.value.body["tenant"], e.value.body["limit"], e.value.body["max"]) == (
            "acme",
            "watches",
            3,
        )
        other = yield self._logon("agent4")
        yield other.watch_queue("Support")
        yield other.watch_queue("Billing")
        yield other.watch_queue("Sales")
        yield other.request(c.WATCH_STATUS, {"users": ["agent9"]})
        use = self._status()
        assert use["acme"]["use"]["watches"] == 3 and use["globex"]["use"]["watches"] == 4
        yield one.unwatch_queue("Sales")
        yield two.watch_queue("Support")
        assert self._status()["acme"]["use"]["watches"] == 3
        yield two.logoff()
        assert self._status()["acme"]["use"]["watches"] == 2

    @defer.inlineCallbacks
    def test_redirected_logon_gives_its_reservation_back(self) -> Any:
        """A logon the bridge redirects after Authenticate releases its reservation at once,
        so the same user (one session each) logs on straight after, with no lapse to wait."""
        yield self._start(tenant_site({"sessionsPerUser": 1}))
        self.site.bridge.router.set_accept_mode("maintenance")
        with pytest.raises(ClientError) as e:
            yield self._logon("agent1")
        assert e.value.code == "redirect"
        url = f"{self.site.control_url}/api/tenants"

        @defer.inlineCallbacks
        def reserved() -> Any:
            _, answer = yield http_json(reactor, "GET", url)
            return next(t for t in answer["tenants"] if t["tenant"] == "acme")["use"]

        use = yield reserved()
        assert use == {**use, "sessions": 0, "reserved": 0}
        self.site.bridge.router.set_accept_mode("default")
        yield self._logon("agent1")

    @defer.inlineCallbacks
    def test_pipelined_watches_never_pass_the_limit(self) -> Any:
        """Watches sent at once from two sessions of one tenant: exactly the limit is held."""
        yield self._start(tenant_site({"watches": 3}))
        one = yield self._logon("agent1")
        two = yield self._logon("agent2")
        asks = [one.watch_queue(q) for q in ("Sales", "Support", "Billing")]
        asks += [two.watch_queue(q) for q in ("Sales", "Support", "Billing")]
        results = yield defer.DeferredList(asks, consumeErrors=True)
        held = [ok for ok, _ in results if ok]
        codes = {r.value.code for ok, r in results if not ok}
        assert len(held) == 3 and codes == {"tenant-limit"}
        assert self._status()["acme"]["use"]["watches"] == 3

    @defer.inlineCallbacks
    def test_lowering_a_limit_live_ends_nothing_and_refuses_until_under(self) -> Any:
        """PUT /api/site lowers acme from 3 sessions to 1: the three stay up (heartbeats
        answer), new logons are refused until only one session is left, then pass again."""
        yield self._start(tenant_site({"sessions": 3}))
        clients = []
        for user in ACME:
            clients.append((yield self._logon(user)))
        lowered = copy.deepcopy(self.data)
        lowered["tenants"][0]["limits"] = {"sessions": 1}
        code, _ = yield http_json(reactor, "PUT", f"{self.site.control_url}/api/site", lowered)
        assert code == 200
        for client in clients:
            beat = yield client.heartbeat()
            assert beat["sessionUpdated"] is True
        body = yield self._refused("agent1", "another-pc")
        assert (body["limit"], body["max"]) == ("sessions", 1)
        yield clients[0].logoff()
        yield clients[1].logoff()
        yield self._refused("agent1", "another-pc")  # 1 session left: at the limit
        yield clients[2].logoff()
        yield self._logon("agent1", "another-pc")
