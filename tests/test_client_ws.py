"""The client over ws:// and wss://, resource downloads and the CLI, against a real site."""

from __future__ import annotations

import io
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from smbridge import cli
from smbridge.client import ClientError, connect
from smbridge.notifier.resources import STATUS_COLOURS, png
from smbridge.testing import start_site

pytestmark = pytest.mark.integration


class ClientOverTunnel(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-client-ws-"))
        self.site = yield start_site(reactor, self.work, ws_port=0, wss_port=0, resources=True)
        self.addCleanup(self.site.stop)

    @defer.inlineCallbacks
    def test_same_api_over_ws_wss_and_tls(self):
        """The same calls work whichever URI scheme is dialed; the ws client sends its type."""
        uris = [
            f"ws://127.0.0.1:{self.site.ws_port}/cic1/session",
            f"wss://localhost:{self.site.wss_port}/a/b/CIC1/Session/",
            f"tls://localhost:{self.site.client_port}",
        ]
        for uri in uris:
            client = yield connect(reactor, uri, ca=self.site.pki.ca, client_type="Test Client")
            version = yield client.get_version()
            self.assertEqual(version["server"], "smbridge")
            yield client.logon("agent4", "demo")
            directory = yield client.get_directory("Company Directory")
            self.assertEqual(directory["name"], "Company Directory")
            yield client.logoff()
        self.assertEqual(len(self.site.bridge.registry), 0)

    @defer.inlineCallbacks
    def test_download_over_a_tls_session(self):
        """A TLS session's resource URIs point at the Notifier's resource host; treq gets them."""
        client = yield connect(
            reactor, f"tls://localhost:{self.site.client_port}", ca=self.site.pki.ca
        )
        yield client.logon("agent5", "demo")
        uri, content = yield client.download("httpsecure", "status-icons/Do Not Disturb.png")
        self.assertEqual(
            uri,
            f"https://127.0.0.1:{self.site.https_port}/status-icons/Do%20Not%20Disturb.png",
        )
        self.assertEqual(content, png(STATUS_COLOURS["Do Not Disturb"]))
        uri, content = yield client.download("http", "responses/greetings.xml")
        self.assertTrue(uri.startswith(f"http://127.0.0.1:{self.site.http_port}/"))
        self.assertIn(b'<response name="Hello">', content)
        with self.assertRaises(ClientError) as caught:
            yield client.download("httpsecure", "no/such/file.png")
        self.assertEqual(
            (caught.exception.code, caught.exception.body["status"]), ("download-failed", 404)
        )
        with self.assertRaises(ClientError) as caught:
            yield client.get_resource_uri("gopher", "x")
        self.assertEqual(caught.exception.code, "bad-request")
        yield client.logoff()

    @defer.inlineCallbacks
    def test_missing_client_type_is_refused(self):
        """An empty client type sends no header, and the bridge refuses with 403."""
        with self.assertRaises(ClientError) as caught:
            yield connect(
                reactor, f"ws://127.0.0.1:{self.site.ws_port}/cic1/session", client_type=""
            )
        self.assertEqual(caught.exception.body["status"], 403)


class CommandOverTunnel(TestCase):
    """``smbridge client wss://...`` in this process, with signals replaced by a callable."""

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-cli-ws-"))
        self.site = yield start_site(reactor, self.work, wss_port=0, resources=True)
        self.addCleanup(self.site.stop)
        self.stdout = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", io.StringIO())
        self.stop: list[Callable[[str], None]] = []

    def fake_signals(self, _reactor: Any, stop: Callable[[str], None]) -> None:
        self.stop.append(stop)

    @defer.inlineCallbacks
    def run_cli(self, uri: str, *extra: str):
        """Run ``smbridge client URI ... --json`` until its last expected line, then SIGTERM."""
        argv = ["client", uri, "--user", "agent6", "--password", "demo"]
        argv += ["--ca", str(self.site.pki.ca), "--json", *extra]
        args = cli.build_parser().parse_args(argv)
        args.queues = [cli.queue_name(w) for w in args.watch]
        args.downloads = [cli.download_spec(d) for d in args.download]
        expected = 1 + len(args.queues) + len(args.downloads)
        self.stdout.seek(0)
        self.stdout.truncate()
        done = ensureDeferred(cli.run_client(reactor, args, self.fake_signals))

        def records() -> list[dict[str, Any]]:
            lines = self.stdout.getvalue().splitlines()
            return [r for r in map(json.loads, lines) if r["event"] != "QueueChanged"]

        for _ in range(500):
            if len(records()) >= expected or done.called:
                break
            yield deferLater(reactor, 0.02, lambda: None)
        self.stop.pop()("SIGTERM")
        result = yield done
        self.assertIsNone(result)
        return records()

    @defer.inlineCallbacks
    def test_cli_accepts_wss(self):
        """The CLI logs on over wss through the same code as TLS, watches, and logs off."""
        uri = f"wss://localhost:{self.site.wss_port}/extra/cic1/session"
        records = yield self.run_cli(uri, "--watch", "queue:Sales")
        self.assertEqual([r["event"] for r in records], ["CreateSession", "WatchQueue"])
        resources = records[0]["payload"]["resources"]
        self.assertEqual(resources["base"], f"https://localhost:{self.site.wss_port}/extra")
        self.assertEqual(len(self.site.bridge.registry), 0)

    @defer.inlineCallbacks
    def test_cli_downloads_to_a_file(self):
        """--download fetches the resource the bridge names and saves it under its name."""
        uri = f"tls://localhost:{self.site.client_port}"
        records = yield self.run_cli(
            uri, "--download", "http:status-icons/Away.png", "--download-dir", str(self.work)
        )
        download = records[-1]["payload"]
        self.assertEqual(
            download["uri"], f"http://127.0.0.1:{self.site.http_port}/status-icons/Away.png"
        )
        self.assertEqual((self.work / "Away.png").read_bytes(), png(STATUS_COLOURS["Away"]))


def test_download_spec_and_save_name():
    """--download needs KIND:PATH; files are saved under their last segment only."""
    assert cli.download_spec("httpsecure:a/b.png") == ("httpsecure", "a/b.png")
    with pytest.raises(Exception, match="expected KIND:PATH"):
        cli.download_spec("nocolon")
    base = Path("/tmp/x")
    assert cli.save_name(base, "a/../../etc/passwd") == base / "passwd"
    assert cli.save_name(base, "dir/..") == base / "download"
    assert cli.save_name(base, "f.xml?v=1") == base / "f.xml"
