"""``GET /metrics``: scraped over HTTP from real bridges and parsed with prometheus_client."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from smbridge.client import connect
from smbridge.sender import parameters as p
from smbridge.testing import poll, start_site

DOCS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


@defer.inlineCallbacks
def scrape(site) -> dict[str, dict[tuple, float]]:
    """name -> {sorted label items: value}, for every sample of one scrape."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    response = yield treq.get(f"http://127.0.0.1:{site.bridge.admin_port}/metrics", pool=pool)
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/plain")
    text = yield response.text()
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


class Metrics(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def _site(self, **kw):
        site = yield start_site(
            reactor, Path(tempfile.mkdtemp(prefix="smbridge-metrics-")), admin_port=0, **kw
        )
        self.addCleanup(site.stop)
        return site

    @defer.inlineCallbacks
    def test_scrape_reports_sessions_counts_sender_and_link(self):
        """Sessions by state and transport, logons, failures, redirects, bytes and the link."""
        site = yield self._site(parameters={p.ENABLED: "Yes", p.TOTAL: "100000"})
        yield poll(lambda: site.bridge.connections.sender.limited)
        yield poll(lambda: site.bridge.load.last_ms is not None, deadline=15)
        clients = []
        for user in ("agent1", "agent2"):
            c = yield connect(reactor, f"tls://localhost:{site.client_port}", ca=site.pki.ca)
            self.addCleanup(c.close)
            yield c.logon(user, "demo")
            clients.append(c)
        bad = yield connect(reactor, f"tls://localhost:{site.client_port}", ca=site.pki.ca)
        self.addCleanup(bad.close)
        yield self.assertFailure(bad.logon("agent3", "wrong"), Exception)
        site.bridge.router.set_accept_mode("maintenance")
        moved = yield connect(reactor, f"tls://localhost:{site.client_port}", ca=site.pki.ca)
        self.addCleanup(moved.close)
        yield self.assertFailure(moved.logon("agent4", "demo"), Exception)
        m = yield scrape(site)
        self.assertEqual(m["smbridge_sessions"][(("state", "active"), ("transport", "tls"))], 2)
        self.assertEqual(m["smbridge_logons_total"][(("transport", "tls"),)], 2)
        self.assertEqual(m["smbridge_logon_failures_total"][()], 1)
        self.assertEqual(m["smbridge_redirects_total"][(("reason", "maintenance"),)], 1)
        counters = site.bridge.router.counters
        self.assertEqual(
            m["smbridge_redirects_total"],
            {
                (("reason", r),): float(counters.get("redirects", reason=r))
                for r in ("maintenance",)
            },
        )
        status = site.bridge.connections.sender.status()
        for priority in ("high", "medium", "low"):
            key = (("priority", priority),)
            self.assertEqual(
                m["smbridge_sent_bytes_total"][key], status["byPriority"][priority]["sentBytes"]
            )
            self.assertEqual(m["smbridge_suppressed_frames_total"][key], 0)
            self.assertIn(key, m["smbridge_queued_bytes"])
        self.assertGreater(m["smbridge_sent_bytes_total"][(("priority", "high"),)], 0)
        self.assertEqual(m["smbridge_upstream_up"][()], 1)
        self.assertEqual(m["smbridge_upstream_state"][(("state", "up"),)], 1)
        self.assertEqual(m["smbridge_upstream_switchovers_total"][()], 0)
        rtt = m["smbridge_upstream_round_trip_seconds"][()]
        self.assertTrue(0 <= rtt < 5, rtt)
        self.assertEqual(m["smbridge_accepting"][()], 0)
        self.assertEqual(m["smbridge_accept_mode"][(("mode", "maintenance"),)], 1)
        self.assertEqual(m["smbridge_limiter_enabled"][()], 1)
        info = next(iter(m["smbridge_info"]))
        self.assertIn(("name", "sm1"), info)
        for c in clients:
            yield c.logoff()

    @defer.inlineCallbacks
    def test_two_bridges_in_one_process_do_not_clash(self):
        """Each bridge has its own registry; any count present is exported by its name."""
        one = yield self._site()
        two = yield self._site()
        one.bridge.router.counters.inc("resumes", outcome="resumed")
        two.bridge.router.counters.inc("connections_refused", 3, reason="rate")
        two.bridge.router.counters.inc("brand_new_thing", kind="x")
        a = yield scrape(one)
        b = yield scrape(two)
        self.assertEqual(a["smbridge_resumes_total"], {(("outcome", "resumed"),): 1})
        self.assertNotIn("smbridge_resumes_total", b)  # no resumes there: no samples
        self.assertEqual(b["smbridge_connections_refused_total"][(("reason", "rate"),)], 3)
        self.assertEqual(b["smbridge_brand_new_thing_total"], {(("kind", "x"),): 1})
        self.assertNotIn("smbridge_brand_new_thing_total", a)

    @defer.inlineCallbacks
    def test_every_exported_metric_is_documented(self):
        """docs/operations.md's metrics table names every metric family a scrape declares."""
        site = yield self._site()
        pool = HTTPConnectionPool(reactor, persistent=False)
        url = f"http://127.0.0.1:{site.bridge.admin_port}/metrics"
        response = yield treq.get(url, pool=pool)
        text = yield response.text()
        declared = re.findall(r"^# TYPE (smbridge_\w+) (\w+)$", text, re.M)
        names = {
            n if kind != "counter" or n.endswith("_total") else n + "_total" for n, kind in declared
        }
        self.assertGreater(len(names), 20)
        doc = DOCS.read_text()
        missing = sorted(n for n in names if f"`{n}`" not in doc)
        self.assertEqual(missing, [])
