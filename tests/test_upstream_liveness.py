"""A silent Notifier is noticed: request deadlines, a dead link dropped, health and lastError.

A unit tier over a Clock and scripted Notifier links, and an integration test
that SIGSTOPs a real ``twistd -n notifier`` (the pair's is tests/test_pair_freeze.py).
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor, task
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.python import usage
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from smbridge import pki
from smbridge.admin.status import healthy
from smbridge.client import connect
from smbridge.client.protocol import ClientError
from smbridge.codec import Frame, Kind, encode
from smbridge.codec import catalog as c
from smbridge.config import BridgeConfig, NotifierAddress, TLSFiles
from smbridge.errors import UpstreamUnavailable
from smbridge.router.router import BridgeIdentity
from smbridge.service import BridgeService
from smbridge.tap import Options
from smbridge.testing import (
    ScriptedNotifier,
    TwistdProcess,
    decode_all,
    free_port,
    http_json,
    poll,
)
from smbridge.transports.batch import WriteBatcher
from smbridge.upstream.addresses import NotifierEndpoints
from smbridge.upstream.connector import STOP_GRACE, LinkState, UpstreamConnector
from smbridge.upstream.deadlines import PendingTable, Silence
from smbridge.upstream.link import RelayPending

CIC = {"name": "cicA", "role": "primary"}


# --- the pure parts ---------------------------------------------------------------------
def test_table_expires_oldest_first_and_forgets_them() -> None:
    """Requests expire in sending order at sent + timeout; an expired id is unknown after."""
    table: PendingTable[str] = PendingTable(10.0)
    table.add(1, "a", 0.0)
    table.add(2, "b", 4.0)
    assert table.next_deadline() == 10.0
    assert table.expire(9.9) == []
    assert table.expire(10.0) == ["a"]
    assert (table.take(1), table.next_deadline()) == (None, 14.0)
    assert table.take(2) == "b"
    assert (len(table), table.next_deadline()) == (0, None)


def test_table_without_timeout_never_expires() -> None:
    """With no timeout nothing expires and there is no deadline."""
    table: PendingTable[str] = PendingTable(None)
    table.add(1, "a", 0.0)
    assert (table.expire(1e9), table.next_deadline(), table.drain()) == ([], None, ["a"])


def test_silence_counts_from_the_first_unanswered_request() -> None:
    """The wait starts at the first request after the last frame heard; a frame restarts it."""
    silence = Silence(15.0)
    assert silence.deadline() is None
    silence.asked(5.0)
    silence.asked(10.0)  # a second request does not move the start
    assert (silence.deadline(), silence.dead(19.9), silence.dead(20.0)) == (20.0, False, True)
    silence.heard(12.0, still_waiting=True)
    assert silence.deadline() == 27.0
    silence.heard(13.0, still_waiting=False)
    assert (silence.deadline(), silence.dead(1e9)) == (None, False)


def test_bad_settings_refused() -> None:
    """Zero or negative times are refused (None means: wait for ever)."""
    with pytest.raises(ValueError):
        PendingTable(0)
    with pytest.raises(ValueError):
        Silence(-1)


# --- the connector over scripted links --------------------------------------------------
@implementer(IStreamClientEndpoint)
class Endpoint:
    """A Notifier address whose links close for real when the bridge aborts them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.peers: list[ScriptedNotifier] = []
        self.transport_class = StringTransportWithDisconnection

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        protocol = factory.buildProtocol(None)
        transport = self.transport_class()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        self.peers.append(ScriptedNotifier(protocol, transport))
        return defer.succeed(protocol)

    @property
    def last(self) -> ScriptedNotifier:
        return self.peers[-1]


class Rig:
    def __init__(
        self,
        timeout: float | None = 10.0,
        dead_after: float | None = 15.0,
        transport_class: type[StringTransportWithDisconnection] = StringTransportWithDisconnection,
    ) -> None:
        self.clock = Clock()
        self.a, self.b = Endpoint("a:5597"), Endpoint("b:5597")
        self.a.transport_class = transport_class
        self.endpoints = NotifierEndpoints([("a:5597", self.a), ("b:5597", self.b)])
        self.connector = UpstreamConnector(
            self.clock,
            self.endpoints,
            {"name": "sm1"},
            WriteBatcher(self.clock),
            "a, b",
            1 << 20,
            request_timeout=timeout,
            dead_after=dead_after,
        )
        self.connector.startService()
        self.clock.advance(0)

    def take(self, endpoint: Endpoint) -> list[Frame]:
        self.clock.advance(0)  # the write batcher flushes on the next turn
        return endpoint.last.take()

    def register(self, endpoint: Endpoint) -> None:
        (frame,) = self.take(endpoint)
        assert (frame.object_type, frame.event_id) == c.LINK_REGISTER
        endpoint.last.answer(frame, {"cic": CIC, "parameters": {}, "roster": []})
        assert self.connector.state is LinkState.UP


class Session:
    """What RelayPending needs of a session: a place for the bytes sent to the client."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)


def test_request_times_out_and_late_answer_is_dropped() -> None:
    """An unanswered request fails upstream-unavailable (retryable) at the timeout; its late
    answer is dropped, not delivered a second time."""
    rig = Rig(timeout=10.0, dead_after=None)
    rig.register(rig.a)
    d = rig.connector.request(c.LINK_PING, {})
    (ping,) = rig.take(rig.a)
    rig.clock.advance(9.9)
    assert not d.called
    errors: list[BaseException] = []
    d.addErrback(lambda f: errors.append(f.value))
    rig.clock.advance(0.1)
    (failure,) = errors
    assert isinstance(failure, UpstreamUnavailable)
    assert failure.payload()["retryable"] is True
    assert "10 s" in str(failure)
    rig.a.last.answer(ping, {})  # late: nothing fires twice (a Deferred would raise)
    assert rig.a.last.link.late_answers == 1
    assert rig.connector.state is LinkState.UP


def test_forwarded_request_gets_one_error_frame() -> None:
    """A forwarded client request that times out gets exactly one upstream-unavailable error."""
    rig = Rig(timeout=2.0, dead_after=None)
    rig.register(rig.a)
    session = Session()
    relay = RelayPending(session, 172, 1, 77)  # type: ignore[arg-type]
    assert rig.connector.link is not None
    rig.connector.link.request(172, 1, b"{}", relay)
    (call,) = rig.take(rig.a)
    rig.clock.advance(2.0)
    rig.a.last.answer(call, {"ok": True})
    (error,) = [f for data in session.sent for f in decode_all(data)]
    assert (error.kind, error.request_id) == (Kind.ERROR, 77)
    assert error.parsed()["code"] == "upstream-unavailable"
    assert error.parsed()["retryable"] is True


def test_silent_link_is_dropped_and_the_other_address_tried() -> None:
    """Pings unanswered and nothing heard for dead_after: the link drops, lastError says why,
    health is 503 with that reason, and the next address is dialled."""
    rig = Rig(timeout=10.0, dead_after=15.0)
    rig.register(rig.a)
    rig.clock.advance(3.0)
    rig.connector.request(c.LINK_PING, {}).addErrback(lambda _: None)  # sent at t=3
    rig.clock.advance(14.9)
    assert rig.connector.state is LinkState.UP
    rig.clock.advance(0.1)
    assert rig.connector.state is LinkState.SWITCHING
    error = rig.connector.last_error or ""
    assert "stopped answering" in error and "15 s" in error and "--link-dead-after" in error
    ok, reason = healthy(_Bridge(rig.connector))  # type: ignore[arg-type]
    assert (ok, reason) == (False, f"the Notifier link is switching: {error}")
    assert rig.endpoints.current == "b:5597"
    rig.clock.advance(1.0)  # a quick retry: the link had been up
    assert len(rig.b.peers) == 1
    rig.register(rig.b)
    assert rig.connector.last_error is None


def test_traffic_keeps_the_link_alive() -> None:
    """Any frame heard restarts the wait; an answered Ping ends it."""
    rig = Rig(timeout=None, dead_after=15.0)
    rig.register(rig.a)
    d = rig.connector.request(c.LINK_PING, {})
    (ping,) = rig.take(rig.a)
    for _ in range(5):
        rig.clock.advance(10.0)
        rig.a.last.link.dataReceived(encode(Kind.NOTIFICATION, *c.LINK_PING, 0, {}))
    assert rig.connector.state is LinkState.UP
    rig.a.last.answer(ping, {})
    assert d.called
    rig.clock.advance(100.0)
    assert rig.connector.state is LinkState.UP


def test_register_unanswered_tries_the_next_address() -> None:
    """A Notifier that takes the connection but never answers Register is given up on."""
    rig = Rig(timeout=5.0, dead_after=15.0)
    rig.take(rig.a)  # the Register, never answered
    rig.clock.advance(5.0)
    assert rig.connector.state is LinkState.CONNECTING
    assert "did not answer Register within 5 s" in (rig.connector.last_error or "")
    assert rig.endpoints.current == "b:5597"
    rig.clock.advance(60.0)  # the backoff
    assert len(rig.b.peers) == 1
    rig.register(rig.b)


def test_no_deadlines_by_default() -> None:
    """Without the options (the core's default) nothing times out."""
    rig = Rig(timeout=None, dead_after=None)
    rig.register(rig.a)
    d = rig.connector.request(c.LINK_PING, {})
    rig.clock.advance(3600.0)
    assert not d.called and rig.connector.state is LinkState.UP


class _Bridge:
    def __init__(self, upstream: UpstreamConnector) -> None:
        self.upstream = upstream


# --- a real Notifier process, frozen with SIGSTOP --------------------------------------
DEAD_AFTER = 3.0
TIMEOUT = 2.0


def notifier_args(work: Path, files: Any, link: int, control: int) -> list[str]:
    """``twistd -n notifier`` on 127.0.0.1 with the site PKI and no resource host."""
    args = ["notifier", "--demo", "--interface=127.0.0.1", f"--port={link}"]
    args += [f"--control=tcp:{control}:interface=127.0.0.1", "--http-port=off"]
    args += ["--https-port=off", f"--cert={files.notifier}", f"--ca={files.ca}"]
    args += [f"--trust={files.bridge_client}", f"--work-path={work}"]
    return args


def resume(process: TwistdProcess) -> None:
    """SIGCONT a process that may be stopped (cleanup: before it is killed)."""
    if process.proc.poll() is None:
        os.kill(process.proc.pid, signal.SIGCONT)


@pytest.mark.integration
class FrozenNotifier(TestCase):
    """One ``twistd -n notifier`` stopped with SIGSTOP under an in-process bridge."""

    timeout = 90

    def setUp(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-freeze-"))
        self.files = pki.ensure_site_pki(self.work / "pki")
        self.link, self.control = free_port(), free_port()

    @defer.inlineCallbacks
    def _health(self) -> Any:
        url = f"http://127.0.0.1:{self.bridge.admin_port}/healthz"
        code, body = yield http_json(reactor, "GET", url)
        return code, body

    @defer.inlineCallbacks
    def _until_health(self, want: int, deadline: float) -> Any:
        end = time.monotonic() + deadline
        while True:
            code, body = yield self._health()
            if code == want:
                return body
            if time.monotonic() > end:
                raise AssertionError(f"health not {want} within {deadline}s: {code} {body}")
            yield task.deferLater(reactor, 0.05, lambda: None)

    @defer.inlineCallbacks
    def _raw(self, client: Any, message: tuple[int, int], body: dict[str, Any]) -> Any:
        """One request without the client's retry: (seconds taken, error code or None)."""
        start = time.monotonic()
        try:
            yield client.protocol.request(*message, body)
        except ClientError as e:
            return time.monotonic() - start, e.code, e.body
        return time.monotonic() - start, None, None

    @defer.inlineCallbacks
    def test_frozen_notifier(self) -> Any:
        """SIGSTOP: a request in flight fails upstream-unavailable at --upstream-timeout, health
        goes 503 with the reason by --link-dead-after, a logon fails at once; SIGCONT heals."""
        notifier = TwistdProcess(
            self.work, notifier_args(self.work, self.files, self.link, self.control)
        )
        self.addCleanup(notifier.kill)
        self.addCleanup(resume, notifier)
        config = BridgeConfig(
            identity=BridgeIdentity("sm1", "localhost", location="Indianapolis"),
            tls=TLSFiles(self.files.bridge, self.files.bridge_client, self.files.ca),
            notifiers=(NotifierAddress("127.0.0.1", self.link),),
            notifier_name="localhost",
            port=0,
            interface="127.0.0.1",
            allow_cleartext=True,
            admin_port=0,
            admin_interface="127.0.0.1",
            ping_interval=0.5,
            upstream_timeout=TIMEOUT,
            link_dead_after=DEAD_AFTER,
        )
        self.bridge = BridgeService(config, reactor)
        ready = poll(lambda: notifier.proc.poll() is not None or _listening(self.link), 45)
        yield ready
        self.bridge.startService()
        self.addCleanup(self.bridge.stopService)
        yield self.bridge.when_ready()
        url = f"tcp://127.0.0.1:{self.bridge.port}"
        client = yield connect(reactor, url)
        self.addCleanup(client.close)
        yield client.logon("agent1", "demo")
        took, code, _ = yield self._raw(client, c.SET_STATUS, {"status": "Available"})
        self.assertNotEqual(code, "upstream-unavailable")
        self.assertEqual((yield self._health())[0], 200)

        os.kill(notifier.proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        took, code, body = yield self._raw(client, c.SET_STATUS, {"status": "Away"})
        request_error = time.monotonic() - stopped
        self.assertEqual((code, body["retryable"]), ("upstream-unavailable", True))
        self.assertGreaterEqual(took, TIMEOUT - 0.1)
        self.assertLess(took, TIMEOUT + 1.0)
        health = yield self._until_health(503, DEAD_AFTER + 3.0)
        unhealthy = time.monotonic() - stopped
        self.assertIn("stopped answering", health["reason"])
        self.assertIn("--link-dead-after", health["reason"])
        self.assertGreaterEqual(unhealthy, DEAD_AFTER - 0.1)
        self.assertIn("stopped answering", self.bridge.upstream.last_error or "")
        late = yield connect(reactor, url)
        self.addCleanup(late.close)
        took, code, body = yield self._raw(
            late, c.CREATE_SESSION, {"user": "agent2", "password": "demo"}
        )
        self.assertEqual((code, body["retryable"]), ("upstream-unavailable", True))
        self.assertLess(took, 0.5)

        os.kill(notifier.proc.pid, signal.SIGCONT)
        yield self._until_health(200, 30.0)
        yield late.logon("agent2", "demo")
        print(
            f"\nfreeze figures: request error {request_error:.2f} s, "
            f"health 503 {unhealthy:.2f} s after SIGSTOP"
        )


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class _FrozenTransport(StringTransportWithDisconnection):
    """A link to a frozen Notifier: closing politely never completes; aborting does."""

    def loseConnection(self) -> None:
        self.disconnecting = True

    def abortConnection(self) -> None:
        StringTransportWithDisconnection.loseConnection(self)


def test_stopping_does_not_wait_for_a_frozen_notifier() -> None:
    """At shutdown a link that does not close within STOP_GRACE seconds is aborted."""
    rig = Rig(timeout=None, dead_after=None, transport_class=_FrozenTransport)
    rig.register(rig.a)
    d = rig.connector.stopService()
    rig.clock.advance(STOP_GRACE - 0.01)
    assert not d.called
    rig.clock.advance(0.01)
    assert d.called and rig.connector.state is LinkState.DISCONNECTED


# --- the options -------------------------------------------------------------------------
def _options(tmp_path: Path, *args: str) -> Any:
    options = Options()
    options.parseOptions(["--demo", "--work-path", str(tmp_path), *args])
    return options.config


def test_options_reach_the_connector(tmp_path: Path) -> None:
    """--upstream-timeout and --link-dead-after default to 10 and 15 s and reach the link."""
    config = _options(tmp_path)
    assert (config.upstream_timeout, config.link_dead_after) == (10.0, 15.0)
    config = _options(tmp_path, "--upstream-timeout", "2.5", "--link-dead-after", "4")
    bridge = BridgeService(config, Clock())
    link = bridge.upstream.link_factory.buildProtocol(None)
    assert (link.pending.timeout, link.silence.dead_after) == (2.5, 4.0)


@pytest.mark.parametrize("flag", ["--upstream-timeout", "--link-dead-after"])
def test_options_are_checked(tmp_path: Path, flag: str) -> None:
    """Zero is refused with the option's name."""
    with pytest.raises(usage.UsageError, match=flag):
        _options(tmp_path, flag, "0")


def test_config_file_sets_them(tmp_path: Path) -> None:
    """The YAML configuration file takes them like the command line."""
    file = tmp_path / "bridge.yaml"
    file.write_text("upstream-timeout: 3\nlink-dead-after: 6.5\n")
    config = _options(tmp_path, "--config", str(file))
    assert (config.upstream_timeout, config.link_dead_after) == (3.0, 6.5)
