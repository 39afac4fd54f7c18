"""The timing histograms and process metrics of ``/metrics``, end to end.

A real bridge and the reference Notifier over loopback TLS (``start_site``), real
clients over TLS, and the scrape over HTTP parsed with prometheus_client's parser.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from smbridge.client import connect
from smbridge.codec.catalog import GET_SERVERS, SET_STATUS
from smbridge.session.session import State
from smbridge.testing import poll, start_site

HISTOGRAMS = (
    ("smbridge_logon_duration_seconds", ()),
    ("smbridge_request_duration_seconds", (("path", "forwarded"),)),
    ("smbridge_request_duration_seconds", (("path", "local"),)),
    ("smbridge_notification_delay_seconds", ()),
    ("smbridge_resume_duration_seconds", ()),
)


@defer.inlineCallbacks
def scrape(site: Any) -> Any:
    """name -> {sorted label items: value}, for every sample of one scrape."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    response = yield treq.get(f"http://127.0.0.1:{site.bridge.admin_port}/metrics", pool=pool)
    assert response.code == 200
    text = yield response.text()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def histogram(m: dict[str, Any], name: str, labels: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """count, sum and the cumulative buckets (by ``le``) of one histogram series."""
    buckets = {
        dict(key)["le"]: value
        for key, value in m[name + "_bucket"].items()
        if tuple(kv for kv in key if kv[0] != "le") == labels
    }
    return {"count": m[name + "_count"][labels], "sum": m[name + "_sum"][labels], "le": buckets}


@pytest.mark.integration
class TimingsEndToEnd(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_histograms_rise_by_what_clients_did_and_process_metrics_are_plausible(self):
        """Two logons, a forwarded and two local requests, one event and a resume: exact counts."""
        site = yield start_site(
            reactor, Path(tempfile.mkdtemp(prefix="smbridge-metrics-e2e-")), admin_port=0
        )
        self.addCleanup(site.stop)
        uri = f"tls://localhost:{site.client_port}"
        before = yield scrape(site)
        for name, labels in HISTOGRAMS:
            series = histogram(before, name, labels)
            self.assertEqual(series["le"]["+Inf"], series["count"], name)

        agent1 = yield connect(reactor, uri, ca=site.pki.ca)
        self.addCleanup(agent1.close)
        yield agent1.logon("agent1", "demo")
        agent2 = yield connect(reactor, uri, ca=site.pki.ca)
        self.addCleanup(agent2.close)
        yield agent2.logon("agent2", "demo")

        answer = yield agent1.request(SET_STATUS, {"status": "Available"})  # forwarded
        self.assertEqual(answer.get("status"), "Available")
        servers = yield agent1.request(GET_SERVERS, {})  # answered by the bridge
        self.assertIn("roster", servers)
        yield agent1.watch_queue("Sales")  # local too (waits for the Notifier's snapshot)

        events: list[Any] = []
        agent1.add_listener(lambda name, frame: events.append(frame.parsed()))
        published_at = time.time()
        code, _ = yield site.publish_queue(reactor, "Sales", [{"id": "m1", "type": "call"}])
        self.assertEqual(code, 200)
        yield poll(lambda: any(e.get("added") == [{"id": "m1", "type": "call"}] for e in events))

        state = agent2.resume_state
        yield agent2.close()
        session = site.bridge.registry.get(state.session_id)
        yield poll(lambda: session.state is State.LINGERING)
        again = yield connect(reactor, uri, ca=site.pki.ca)
        self.addCleanup(again.close)
        resumed = yield again.resume(state)
        self.assertTrue(resumed["resumed"])

        after = yield scrape(site)
        rises = {
            (name, labels): histogram(after, name, labels)["count"]
            - histogram(before, name, labels)["count"]
            for name, labels in HISTOGRAMS
        }
        self.assertEqual(
            rises,
            {
                ("smbridge_logon_duration_seconds", ()): 2,
                ("smbridge_request_duration_seconds", (("path", "forwarded"),)): 1,
                ("smbridge_request_duration_seconds", (("path", "local"),)): 2,
                ("smbridge_notification_delay_seconds", ()): 1,
                ("smbridge_resume_duration_seconds", ()): 1,
            },
        )
        waited = time.time() - published_at
        for name, labels in HISTOGRAMS:
            series = histogram(after, name, labels)
            self.assertEqual(series["le"]["+Inf"], series["count"], name)
            self.assertGreaterEqual(series["sum"], 0.0, name)
            counts = [series["le"][le] for le in sorted(series["le"], key=float)]
            self.assertEqual(counts, sorted(counts), name)  # cumulative
        delay = histogram(after, "smbridge_notification_delay_seconds", ())
        self.assertLessEqual(delay["sum"], waited)  # stamped after we started waiting
        logon = histogram(after, "smbridge_logon_duration_seconds", ())
        self.assertGreater(logon["sum"], 0.0)  # each logon waited for the Notifier

        def one(name: str) -> float:
            return float(after[name][()])

        self.assertGreater(one("process_resident_memory_bytes"), 1 << 20)
        self.assertGreater(
            one("process_virtual_memory_bytes"), one("process_resident_memory_bytes")
        )
        self.assertGreater(one("process_cpu_seconds_total"), 0.0)
        self.assertGreater(one("process_open_fds"), 0)
        self.assertGreaterEqual(one("process_max_fds"), one("process_open_fds"))
        self.assertLess(one("process_start_time_seconds"), time.time())
        self.assertGreater(one("process_start_time_seconds"), time.time() - 86400)
