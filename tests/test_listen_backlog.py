"""The client listeners' listen backlog: ``--backlog`` reaches the port, ws and wss sockets."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import tempfile
import time
from collections.abc import Generator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import TestCase

from smbridge import pki
from smbridge.admin.reload import reload
from smbridge.config import BridgeConfig
from smbridge.listening import announce_backlog, somaxconn
from smbridge.options import parse
from smbridge.service import BridgeService
from smbridge.testing import TwistdProcess

DEMO_PORTS = (
    *("--port", "0", "--notifier-port", "0", "--control-port", "0", "--admin-port", "off"),
    *("--ws-port", "off", "--wss-port", "off"),
    *("--notifier-http-port", "off", "--notifier-https-port", "off"),
)


def _config(work: Path, *argv: str) -> BridgeConfig:
    pki.ensure_site_pki(work / "pki")
    return parse(["--demo", "--work-path", str(work), *argv])


def _backlogs(config: BridgeConfig) -> dict[int, int]:
    """Start a bridge on a memory reactor: the backlog each TCP listen got, by port."""
    reactor = MemoryReactorClock()
    bridge = BridgeService(config, reactor)
    bridge.startService()
    return {port: backlog for port, _factory, backlog, _interface in reactor.tcpServers}


def test_the_default_backlog_is_4096_on_the_client_port_ws_and_wss(tmp_path: Path) -> None:
    """Without --backlog the client port, ws and wss listen with a backlog of 4096."""
    config = _config(tmp_path, "--port", "7001", "--ws-port", "7002", "--wss-port", "7003")
    assert config.backlog == 4096
    backlogs = _backlogs(replace(config, admin_port=None))
    assert backlogs == {7001: 4096, 7002: 4096, 7003: 4096}


def test_backlog_option_reaches_every_client_listener_but_not_admin(tmp_path: Path) -> None:
    """--backlog 777 is the backlog of the client port, ws and wss; the admin API keeps 50."""
    config = _config(
        tmp_path,
        *("--backlog", "777", "--port", "7001", "--ws-port", "7002", "--wss-port", "7003"),
        *("--admin-port", "7004"),
    )
    assert _backlogs(config) == {7001: 777, 7002: 777, 7003: 777, 7004: 50}


def test_backlog_from_the_yaml_file(tmp_path: Path) -> None:
    """The configuration file's ``backlog`` key sets it like the flag does."""
    file = tmp_path / "bridge.yaml"
    file.write_text(yaml.safe_dump({"demo": True, "work-path": str(tmp_path), "backlog": 123}))
    assert parse(["--config", str(file)]).backlog == 123


def test_a_reload_reports_that_the_backlog_needs_a_restart(tmp_path: Path) -> None:
    """A configuration file whose backlog changed is answered needsRestart ["backlog"]."""
    file = tmp_path / "bridge.yaml"
    settings = {"demo": True, "work-path": str(tmp_path), "backlog": 100}
    file.write_text(yaml.safe_dump(settings))
    bridge = BridgeService(parse(["--config", str(file)]), MemoryReactorClock())
    file.write_text(yaml.safe_dump({**settings, "backlog": 200}))
    answer = reload(bridge, bridge.parse)
    assert (answer["applied"], answer["needsRestart"]) == ({}, ["backlog"])
    assert bridge.config.backlog == 100


@pytest.mark.parametrize("value", ["0", "-1", "65536"])
def test_backlog_out_of_range_is_a_usage_error(tmp_path: Path, value: str) -> None:
    """A backlog outside 1..65535 is refused with a message naming the option and range."""
    with pytest.raises(usage.UsageError, match=r"--backlog must be 1\.\.65535"):
        _config(tmp_path, "--backlog", value)


class Announce(TestCase):
    def _events(self) -> EventLoggingObserver:
        return EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_effective_backlog_logged_once_without_warning(self) -> None:
        """Under somaxconn the backlog is logged once at info level and nothing is warned."""
        events = self._events()
        assert announce_backlog(4096, 8192) == 4096
        (line,) = [e for e in events if e.get("event", "").startswith("listener.backlog")]
        assert (line["event"], line["effective"]) == ("listener.backlog", 4096)

    def test_somaxconn_below_the_backlog_warns(self) -> None:
        """A somaxconn below --backlog caps it, and the bridge warns with both figures."""
        events = self._events()
        assert announce_backlog(4096, 128) == 128
        (warning,) = [e for e in events if e.get("event") == "listener.backlog_capped"]
        assert (warning["cap"], warning["configured"]) == (128, 4096)

    def test_somaxconn_is_read_from_proc(self) -> None:
        """somaxconn() reads the kernel's figure, and None where the file is missing."""
        expected = int(Path("/proc/sys/net/core/somaxconn").read_text())
        assert somaxconn() == expected
        assert somaxconn(Path("/nonexistent/somaxconn")) is None


def _listen_queue(port: int) -> int:
    """The listening socket's backlog as the kernel reports it (``ss``'s Send-Q)."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    (line,) = out.strip().splitlines()
    return int(line.split()[2])


def _connect_storm(port: int, n: int = 1000, deadline: float = 5.0) -> list[float]:
    """Open ``n`` non-blocking connects at once: each one's seconds to the TCP handshake."""
    poller, pending, times = select.epoll(), {}, []
    start = time.monotonic()
    try:
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            pending[s.fileno()] = s
            poller.register(s.fileno(), select.EPOLLOUT)
        while pending and time.monotonic() < start + deadline:
            for fd, _ in poller.poll(0.05):
                times.append(time.monotonic() - start)
                poller.unregister(fd)
                pending.pop(fd).close()
    finally:
        for s in pending.values():
            s.close()
        poller.close()
    return times


@pytest.mark.integration
class TwistdBacklog(TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def _bridge(self, *argv: str) -> Generator[Deferred[Any], Any, int]:
        """Start ``twistd -n smbridge --demo``; its client port."""
        work = Path(tempfile.mkdtemp(prefix="smbridge-backlog-"))
        args = ["smbridge", "--demo", "--work-path", str(work), *DEMO_PORTS, *argv]
        twistd = TwistdProcess(work, args)
        self.addCleanup(twistd.kill)
        ports_file = work / "ports.json"
        yield twistd.wait_for(ports_file.exists, "ports.json")
        port: int = json.loads(ports_file.read_text())["client"]
        return port

    @defer.inlineCallbacks
    def test_the_client_socket_listens_with_the_configured_backlog(self) -> Any:
        """The kernel reports min(--backlog, somaxconn) on the bridge's client socket."""
        cap = somaxconn() or 4096
        default = yield self._bridge()
        small = yield self._bridge("--backlog", "10")
        assert (_listen_queue(default), _listen_queue(small)) == (min(4096, cap), 10)

    @defer.inlineCallbacks
    def test_a_thousand_clients_at_once_connect_within_a_second_by_default(self) -> Any:
        """1,000 connects at once finish under 1 s by default; with --backlog 10 some retry."""
        default = yield self._bridge()
        small = yield self._bridge("--backlog", "10")
        fast, slow = _connect_storm(default), _connect_storm(small)
        assert (len(fast), len(slow)) == (1000, 1000)
        assert max(fast) < 1.0
        assert sum(1 for t in slow if t >= 1.0) > 0  # a dropped SYN is retried after 1 s
