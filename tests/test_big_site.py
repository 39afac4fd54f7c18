"""Big sites: 50,000 users, default limits, every frame on the link and to clients bounded.

A generated sizing site (40,000 agents, 4,000 supervisors, 6,000 business users:
a Company Directory of 50,000 entries, about 5 MB encoded) runs in the real
reference Notifier behind the real bridge over real TLS. The site is generated
in the test (a YAML site file of this size takes ~25 s to write and read, so it
is built in memory); the PKI lives in a temporary directory.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from smbridge.client import connect
from smbridge.codec import catalog as c
from smbridge.codec.frames import DEFAULT_MAX_FRAME
from smbridge.codec.pieces import PIECE_BYTES
from smbridge.notifier.site import COMPANY_DIRECTORY, Site
from smbridge.notifier.sizing import sizing_site_dict
from smbridge.testing import Recorder, http_json, poll, start_site

USERS = 50_000
BOUND = PIECE_BYTES + 14  # a piece's payload and the frame header
COMPANY_TOPIC = f"directory:{COMPANY_DIRECTORY}"


def big_site() -> Site:
    data = sizing_site_dict(40_000, supervisors=4_000, business=6_000)
    data["traffic"].update(callsPerSecond=0, businessCallsPerSecond=0)
    return Site.from_dict(data)


@pytest.mark.integration
class BigSite(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        work = Path(tempfile.mkdtemp(prefix="smbridge-big-site-"))
        self.addCleanup(shutil.rmtree, work, True)
        site = big_site()
        assert len(site.directories[COMPANY_DIRECTORY]) == USERS
        self.site = yield start_site(reactor, work, site=site)
        self.addCleanup(self.site.stop)
        # DirectoriestoCacheOnSMStartup: the bridge loads the Company Directory at link up.
        fanout = self.site.bridge.router.fanout
        yield poll(lambda: fanout.state(COMPANY_TOPIC) is not None, deadline=30)
        self.client = yield connect(
            reactor, f"tls://localhost:{self.site.client_port}", ca=self.site.pki.ca
        )
        self.addCleanup(self.client.close)

    def largest_link_frame(self) -> int:
        return max(link.largest_frame for link in self.site.notifier._links.links)

    @defer.inlineCallbacks
    def test_fifty_thousand_users_log_on_load_and_search_the_directory(self) -> Any:
        """A user logs on, loads all 50,000 entries and finds one; no frame exceeds a piece."""
        reply = yield self.client.logon("user4321", "demo")
        self.assertTrue(reply["sessionId"].startswith("sm1-"))
        directory = yield self.client.get_directory(COMPANY_DIRECTORY)
        ids = [e["id"] for e in directory["entries"]]
        self.assertEqual(len(ids), USERS)
        self.assertEqual(directory["total"], USERS)
        self.assertEqual(ids[:2], ["agent1", "agent2"])  # the site's order, kept
        self.assertEqual(len(set(ids)), USERS)
        self.assertEqual(ids[-1], "user6000")
        found = yield self.client.request(
            c.SEARCH_DIRECTORY, {"name": COMPANY_DIRECTORY, "query": "User 4321"}
        )
        self.assertEqual([e["id"] for e in found["entries"]], ["user4321"])
        by_extension = yield self.client.request(
            c.SEARCH_DIRECTORY, {"name": COMPANY_DIRECTORY, "query": "user5999"}
        )
        self.assertEqual([e["id"] for e in by_extension["entries"]], ["user5999"])
        # The directory is several frame limits large, yet no frame came near the limit.
        self.assertGreater(len(repr(directory["entries"])), 4 * DEFAULT_MAX_FRAME)
        self.assertLessEqual(self.largest_link_frame(), BOUND)
        self.assertGreater(self.largest_link_frame(), BOUND // 2)  # pieces were used
        self.assertLessEqual(self.client.protocol.largest_frame, BOUND)
        self.assertGreater(self.client.protocol.largest_frame, BOUND // 2)

    @defer.inlineCallbacks
    def test_a_fifty_thousand_entry_change_reaches_a_watcher_in_bounded_frames(self) -> Any:
        """50,000 entries added at once reach a directory watcher as several bounded events."""
        yield self.client.logon("supervisor1", "demo")
        yield self.client.get_directory(COMPANY_DIRECTORY)  # now a watcher
        recorder = Recorder(self.client)
        added = [
            {"id": f"new{i:05d}", "displayName": f"New {i}", "extension": str(90_000 + i)}
            for i in range(USERS)
        ]
        payload = {"name": COMPANY_DIRECTORY, "added": added, "changed": [], "removed": []}
        code, answer = yield http_json(
            reactor,
            "POST",
            f"{self.site.control_url}/api/publish",
            {"objectType": 174, "eventId": 3, "topic": COMPANY_TOPIC, "payload": payload},
        )
        self.assertEqual((code, answer["delivered"]), (200, 1))

        def arrived() -> int:
            return sum(len(e["added"]) for e in recorder.of("DirectoryChanged"))

        yield poll(lambda: arrived() >= USERS, deadline=30)
        events = recorder.of("DirectoryChanged")
        self.assertGreater(len(events), 4)
        got = [item for e in events for item in e["added"]]
        self.assertEqual(got, added)  # every entry once, in order
        self.assertLessEqual(self.largest_link_frame(), BOUND)
        self.assertLessEqual(self.client.protocol.largest_frame, BOUND)
        everything = yield self.client.get_directory(COMPANY_DIRECTORY)
        self.assertEqual(everything["total"], 2 * USERS)
        self.assertEqual(len(everything["entries"]), 2 * USERS)

    @defer.inlineCallbacks
    def test_a_queue_of_six_thousand_calls_is_watched_in_bounded_frames(self) -> Any:
        """A queue larger than a piece: watch_queue gets all of it; every frame stays bounded."""
        calls = [
            {"id": f"big{i}", "type": "call", "state": "Offering", "from": f"+1 317 555 {i:04d}"}
            for i in range(6_000)
        ]
        code, _ = yield self.site.publish_queue(reactor, "WG1", calls)
        self.assertEqual(code, 200)
        yield self.client.logon("agent1", "demo")
        recorder = Recorder(self.client)
        snapshot = yield self.client.watch_queue("WG1")
        self.assertEqual([c["id"] for c in snapshot["interactions"]], [c["id"] for c in calls])
        tail = [e for e in recorder.of("QueueChanged") if e.get("continued")]
        self.assertGreaterEqual(len(tail), 1)  # it did come in pieces
        self.assertLessEqual(self.largest_link_frame(), BOUND)
        self.assertLessEqual(self.client.protocol.largest_frame, BOUND)
