"""Failed TLS handshakes on the wss port do not flood the log (a scan is not an error)."""

from __future__ import annotations

import socket
import ssl
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor, threads
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from smbridge import pki
from smbridge.testing import start_site

pytestmark = pytest.mark.integration


def fail_handshakes(port: int, count: int, stranger_ca: Path) -> list[str]:
    """``count`` handshakes that fail: clear text, and TLS clients that refuse the
    server's certificate; each read until the server ends the connection."""
    ends = []
    strict = ssl.create_default_context(cafile=str(stranger_ca))
    for i in range(count):
        with socket.create_connection(("127.0.0.1", port), 5) as raw:
            raw.settimeout(5)
            if i % 2:
                raw.sendall(b"GET /IC/session HTTP/1.1\r\nHost: x\r\n\r\n")
                try:
                    while raw.recv(4096):
                        pass
                    ends.append("eof")
                except ConnectionResetError:
                    ends.append("reset")
            else:
                try:
                    strict.wrap_socket(raw, server_hostname="localhost").close()
                    ends.append("handshake succeeded")
                except ssl.SSLError:
                    ends.append("refused")
    return ends


class FailedHandshakes(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_fifty_failed_handshakes_log_at_most_one_line_above_debug(self) -> Any:
        """50 failed TLS handshakes on the wss port produce at most one line above debug."""
        work = Path(tempfile.mkdtemp(prefix="smbridge-tlslog-"))
        site = yield start_site(reactor, work, wss_port=0)
        self.addCleanup(site.stop)
        stranger = pki.ensure_site_pki(work / "stranger")  # another site's CA
        observer = EventLoggingObserver()
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        ends = yield threads.deferToThread(fail_handshakes, site.wss_port, 50, stranger.ca)
        self.assertNotIn("handshake succeeded", ends)
        loud = [
            formatEvent(e)
            for e in observer
            if e.get("log_level", LogLevel.info) > LogLevel.debug
            and not str(e.get("log_namespace", "")).startswith("smbridge.router")  # link up
        ]
        self.assertLessEqual(len(loud), 1, loud[:5])
        failed = [e for e in observer if e.get("event") == "tunnel.tls_failed"]
        self.assertEqual(len(failed), 50)
