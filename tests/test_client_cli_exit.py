"""``smbridge client`` as a subprocess against a real bridge: every exit after logon logs off.

A reader that closes the pipe (``| head -1``) ends the command promptly and quietly
(exit 0, nothing on stderr); an error after logon ends it with exit 1. Either way the
bridge has seen DestroySession: the session is gone, not lingering for a resume.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from smbridge.testing import poll, start_site

pytestmark = pytest.mark.integration


class HeadOne(ProcessProtocol):
    """Reads the CLI's stdout like ``head -1``: after the first line it closes the pipe."""

    def __init__(self, lines: int = 1) -> None:
        self.lines = lines
        self.out = b""
        self.err = b""
        self.ended: defer.Deferred[int | None] = defer.Deferred()
        self.stdout_closed = False

    def outReceived(self, data: bytes) -> None:
        self.out += data
        if self.lines and self.out.count(b"\n") >= self.lines and not self.stdout_closed:
            self.stdout_closed = True
            self.transport.closeChildFD(1)

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(reason.value.exitCode)


class ExitTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-cli-exit-"))
        self.site = yield start_site(reactor, self.work)
        self.addCleanup(self.site.stop)

    def spawn(self, reader: HeadOne, *extra: str) -> Any:
        argv = [sys.executable, "-m", "smbridge.cli", "client",
                f"tls://localhost:{self.site.client_port}", "--user", "agent1",
                "--ca", str(self.site.pki.ca), *extra]  # fmt: skip
        env = {**os.environ, "SMBRIDGE_PASSWORD": "demo"}
        transport = reactor.spawnProcess(reader, sys.executable, argv, env=env, path=str(self.work))
        self.addCleanup(lambda: reader.ended.called or transport.signalProcess("KILL"))
        return transport

    @defer.inlineCallbacks
    def ended_within(self, reader: HeadOne, seconds: float) -> Any:
        yield poll(lambda: reader.ended.called, deadline=seconds)
        code = yield reader.ended
        return code

    @defer.inlineCallbacks
    def test_a_reader_that_closes_after_one_line_ends_the_command_and_the_session(self) -> Any:
        """``| head -1``: the CLI exits 0 at once, prints no traceback, and logs off."""
        reader = HeadOne(lines=1)
        self.spawn(reader, "--watch", "queue:Sales")
        yield poll(lambda: reader.stdout_closed or reader.ended.called, deadline=20)
        self.assertTrue(reader.out.startswith(b"logged on: session "), reader.out)
        code = yield self.ended_within(reader, 10)
        self.assertEqual((code, reader.err), (0, b""))
        # Gone, not lingering (a lingering session stays in the registry for --linger).
        yield poll(lambda: len(self.site.bridge.registry) == 0, deadline=10)

    @defer.inlineCallbacks
    def test_a_reader_that_closes_while_notifications_flow_ends_it_quietly(self) -> Any:
        """The reader closes while QueueChanged lines are being written: no BrokenPipe trace."""
        reader = HeadOne(lines=3)
        self.spawn(reader, "--watch", "queue:Sales")
        yield poll(lambda: b"queue Sales:" in reader.out or reader.ended.called, deadline=20)
        for n in range(200):  # bounded: until the closed pipe ends the command
            if reader.ended.called:
                break
            call = {"id": f"c{n}", "type": "call", "workgroup": "Sales"}
            yield self.site.publish_queue(reactor, "Sales", [call])
        code = yield self.ended_within(reader, 10)
        self.assertEqual((code, reader.err), (0, b""))
        yield poll(lambda: len(self.site.bridge.registry) == 0, deadline=10)

    @defer.inlineCallbacks
    def test_an_error_after_logon_logs_off_before_exiting_1(self) -> Any:
        """A request refused after logon (no such queue): exit 1, one line, session destroyed."""
        reader = HeadOne(lines=0)
        self.spawn(reader, "--watch", "queue:NoSuchQueue")
        code = yield self.ended_within(reader, 20)
        self.assertEqual(code, 1, reader.err)
        self.assertEqual(reader.err.decode(), "smbridge: not-found: no queue 'NoSuchQueue'"
                         " (topic 'queue:NoSuchQueue')\n")  # fmt: skip
        self.assertTrue(reader.out.startswith(b"logged on: session "), reader.out)
        yield poll(lambda: len(self.site.bridge.registry) == 0, deadline=10)

    @defer.inlineCallbacks
    def test_keep_logs_off_after_an_error_and_on_a_closed_stdout(self) -> Any:
        """--keep: an error after logon and a reader closing both end with DestroySession."""
        failing = HeadOne(lines=0)
        self.spawn(failing, "--keep", "--directory", "NoSuchDirectory")
        code = yield self.ended_within(failing, 20)
        self.assertEqual(code, 1, failing.err)
        self.assertIn(b"smbridge: not-found: no directory 'NoSuchDirectory'", failing.err)
        yield poll(lambda: len(self.site.bridge.registry) == 0, deadline=10)
        reader = HeadOne(lines=1)
        self.spawn(reader, "--keep", "--watch", "queue:Sales")
        yield poll(lambda: reader.stdout_closed or reader.ended.called, deadline=20)
        code = yield self.ended_within(reader, 10)
        self.assertEqual((code, reader.err), (0, b""))
        yield poll(lambda: len(self.site.bridge.registry) == 0, deadline=10)
