"""The descriptor reserve (transports/descriptors.py): with a Clock and fake counts, then
a real ``twistd -n smbridge`` under a low RLIMIT_NOFILE flooded with idle connections."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from smbridge.client import connect
from smbridge.counters import Counters
from smbridge.testing import http_json, poll, stop_process
from smbridge.transports.descriptors import DescriptorReserve, open_descriptors


class FakePort:
    def __init__(self) -> None:
        self.reading = True

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True


class ReserveCore(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.counters = Counters()
        self.open = 90  # descriptors open, as the fake count reports them
        self.counts = 0
        self.port = FakePort()
        self.reserve = DescriptorReserve(
            self.clock, 10, self.counters, lambda: [self.port], limit=110, count=self.count
        )

    def count(self) -> int:
        self.counts += 1
        return self.open

    def accept(self) -> bool:
        self.open += 1  # the accepted socket is open before the factory is asked
        admitted = self.reserve.admit()
        if not admitted:
            self.open -= 1
        return admitted

    def test_admits_up_to_the_line_then_pauses_and_refuses(self) -> None:
        """With limit 110 and reserve 10, the 100th open descriptor is the last admitted;
        the listeners pause then and a connection accepted in the same read is refused."""
        results = [self.accept() for _ in range(12)]
        self.assertEqual(results, [True] * 10 + [False] * 2)
        self.assertEqual(self.open, 100)
        self.assertFalse(self.port.reading)
        self.assertTrue(self.reserve.paused)
        self.assertEqual(self.counters.get("connections_refused", reason="fd-reserve"), 2)

    def test_counts_only_near_the_line(self) -> None:
        """Far from the line an accept costs no count of /proc/self/fd."""
        self.open = 10
        for _ in range(80):
            self.assertTrue(self.accept())
        self.assertEqual(self.counts, 1)  # the first accept's calibration only

    def test_closed_connections_are_seen_at_the_next_count(self) -> None:
        """An estimate over the line is checked by a count, which sees closed connections."""
        for _ in range(10):
            self.accept()
        self.assertTrue(self.reserve.paused)
        self.open -= 30  # clients left
        self.clock.advance(0.5)
        self.assertFalse(self.reserve.paused)
        self.assertTrue(self.port.reading)
        self.assertTrue(self.accept())

    def test_stays_paused_until_some_room_is_free(self) -> None:
        """One free descriptor is not enough: the listeners read again with a quarter of
        the reserve (here 2) free on top of it."""
        for _ in range(10):
            self.accept()
        self.open -= 1
        self.clock.advance(0.5)
        self.assertTrue(self.reserve.paused)
        self.open -= 1
        self.clock.advance(0.5)
        self.assertFalse(self.reserve.paused)

    def test_zero_reserve_is_off(self) -> None:
        """--fd-reserve 0 admits everything and never counts."""
        self.reserve.reserve = 0
        self.open = 500
        self.assertTrue(all(self.accept() for _ in range(20)))
        self.assertEqual(self.counts, 0)

    def test_open_descriptors_counts_this_process(self) -> None:
        """The real count goes up by one for one more open file."""
        before = open_descriptors()
        with open(os.devnull) as _:
            after = open_descriptors()
        assert before is not None and after is not None
        self.assertEqual(after, before + 1)


LIMIT = 256
RESERVE = 32


def low_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


class Idle(Protocol):
    def __init__(self) -> None:
        self.lost = False

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


@pytest.mark.integration
class ReserveUnderFlood(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-fd-reserve-"))
        args = ["smbridge", "--demo", "--work-path", str(self.work)]
        for flag in ("port", "notifier-port", "control-port", "admin-port"):
            args += [f"--{flag}", "0"]
        for flag in ("ws-port", "wss-port", "notifier-http-port", "notifier-https-port"):
            args += [f"--{flag}", "off"]
        # Long deadlines: here the flood is held by the reserve alone.
        args += ["--handshake-timeout", "300", "--fd-reserve", str(RESERVE)]
        self.log_path = self.work / "twistd.log"
        log = self.log_path.open("wb")
        self.addCleanup(log.close)
        twistd = str(Path(sys.executable).parent / "twistd")
        self.proc = subprocess.Popen(
            [twistd, "-n", "--pidfile=", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.work,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=low_limit,
        )
        self.addCleanup(stop_process, self.proc)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    @defer.inlineCallbacks
    def test_admin_and_sessions_work_at_the_limit(self) -> Any:
        """Flooded past RLIMIT_NOFILE, the bridge keeps its reserve: the admin API answers, a
        session heartbeats; once the flood leaves, new logons work again."""
        ports_file = self.work / "ports.json"
        yield poll(lambda: ports_file.exists() or self.proc.poll() is not None, deadline=45)
        self.assertIsNone(self.proc.poll(), self.output())
        ports = json.loads(ports_file.read_text())
        ca = self.work / "pki" / "ca.pem"
        tls = f"tls://localhost:{ports['client']}"
        admin = f"http://127.0.0.1:{ports['admin']}/api/status"
        keeper = yield connect(reactor, tls, ca=ca)
        yield keeper.logon("agent1", "demo")

        flood = [Idle() for _ in range(LIMIT + 50)]
        dials = []
        for i, proto in enumerate(flood):
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", ports["client"], timeout=60)
            dials.append(connectProtocol(endpoint, proto).addErrback(lambda _: None))
            if i % 25 == 24:
                yield task.deferLater(reactor, 0.01, lambda: None)
        yield poll(lambda: "the client listeners stop accepting" in self.output(), deadline=30)
        self.assertIn(f"of {LIMIT} file descriptors open", self.output())

        began = time.monotonic()
        code, status = yield http_json(reactor, "GET", admin)
        admin_ms = (time.monotonic() - began) * 1000
        self.assertEqual(code, 200)
        began = time.monotonic()
        yield keeper.heartbeat()
        heartbeat_ms = (time.monotonic() - began) * 1000
        self.assertIsNone(self.proc.poll())

        for d in dials:
            d.cancel()  # those still waiting in the kernel's backlog
        for proto in flood:
            if proto.transport is not None:
                proto.transport.abortConnection()
        yield poll(lambda: "the client listeners accept again" in self.output(), deadline=30)
        began = time.monotonic()
        fresh = yield connect(reactor, tls, ca=ca)
        reply = yield fresh.logon("agent2", "demo")
        logon_ms = (time.monotonic() - began) * 1000
        self.assertTrue(reply["sessionId"])
        yield fresh.logoff()
        yield keeper.logoff()
        print(
            f"\nfd reserve: limit {LIMIT}, reserve {RESERVE}, {len(flood)} idle connections; "
            f"admin API {admin_ms:.0f} ms, heartbeat {heartbeat_ms:.0f} ms during the flood; "
            f"logon after it {logon_ms:.0f} ms"
        )
        self.assertNotIn("Traceback", self.output())
