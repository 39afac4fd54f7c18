"""``smbridge client --keep`` against a real bridge and Notifier: the CLI outlives a drop."""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from smbridge import cli
from smbridge.testing import http_json, poll, start_site

pytestmark = pytest.mark.integration


class KeepTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.site = yield start_site(reactor, Path(tempfile.mkdtemp(prefix="smbridge-keep-")))
        self.addCleanup(self.site.stop)
        yield http_json(
            reactor, "POST", f"{self.site.control_url}/api/traffic", {"callsPerSecond": 0}
        )
        self.stdout = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", io.StringIO())
        self.stop: list[Callable[[str], None]] = []

    def fake_signals(self, _reactor: Any, stop: Callable[[str], None]) -> None:
        self.stop.append(stop)

    def args(self, *extra: str) -> argparse.Namespace:
        argv = ["client", f"tls://localhost:{self.site.client_port}", "--user", "agent1"]
        argv += ["--ca", str(self.site.pki.ca), "--keep", *extra]
        args = cli.build_parser().parse_args(argv)
        args.queues = [cli.queue_name(w) for w in args.watch]
        args.password = "demo"
        return args

    def printed(self, text: str) -> bool:
        return text in self.stdout.getvalue()

    @defer.inlineCallbacks
    def test_a_dropped_connection_is_resumed_and_events_keep_coming(self) -> Any:
        """The bridge drops the connection: the CLI resumes, prints it, and sees the next call."""
        done = defer.ensureDeferred(cli.run_client(reactor, self.args("--watch", "queue:Sales"),
                                                   self.fake_signals))  # fmt: skip
        yield poll(lambda: self.printed("queue Sales:"), deadline=20)
        (conn,) = list(self.site.bridge.connections.connections)
        conn.transport.abortConnection()  # the network drops it
        yield poll(lambda: self.printed("resumed session"), deadline=20)
        call = {"id": "after-drop", "type": "call", "workgroup": "Sales"}
        yield self.site.publish_queue(reactor, "Sales", [call])
        yield poll(lambda: self.printed('"id":"after-drop"'), deadline=20)
        self.assertEqual(len(self.site.bridge.registry), 1)  # the same session, resumed
        self.stop[0]("SIGTERM")
        self.assertIsNone((yield done))
        yield poll(lambda: len(self.site.bridge.registry) == 0, deadline=20)  # logged off
