"""A frozen primary is taken over: the backup's probe is an application-level request.

Unit tests of :class:`~smbridge.notifier.pair.Pair` over a Clock, and two real
``twistd -n notifier`` processes whose primary is stopped with SIGSTOP under an
in-process bridge given both addresses.
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
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import TestCase

from smbridge import pki
from smbridge.client import connect
from smbridge.codec import catalog as c
from smbridge.config import BridgeConfig, NotifierAddress, TLSFiles
from smbridge.notifier.pair import BACKUP, PRIMARY, Pair
from smbridge.notifier.tap import Options
from smbridge.router.router import BridgeIdentity
from smbridge.service import BridgeService
from smbridge.testing import TwistdProcess, free_port, http_json, poll


def test_a_probe_that_never_answers_counts_as_silence() -> None:
    """A peer that takes the probe but never answers (frozen) is taken over after detection."""
    clock = Clock()
    probes: list[defer.Deferred[Any]] = []

    def probe() -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        probes.append(d)
        return d

    pair = Pair(clock, BACKUP, "a:5597", probe=probe, detection=3.0, interval=0.5)
    assert pair.probe_timeout == 1.5
    pair.start()
    clock.pump([0.1] * 29)  # 2.9 s
    assert pair.role == BACKUP
    clock.pump([0.1] * 20)
    assert (pair.role, pair.took_over) == (PRIMARY, True)
    assert pair.state()["tookOver"] is True
    assert all(d.called for d in probes[:-1])  # each timed-out probe was cancelled
    pair.stop()


def test_a_thawed_primary_steps_down_when_the_peer_took_over() -> None:
    """A primary whose peer answers "primary, took over" becomes the backup (no second primary)."""
    clock = Clock()
    answer = {"role": PRIMARY, "tookOver": False}
    pair = Pair(clock, PRIMARY, "b:5597", probe=lambda: defer.succeed(dict(answer)))
    roles: list[str] = []
    pair.on_change(roles.append)
    pair.start()
    clock.advance(5)
    assert pair.role == PRIMARY  # the peer did not take over: not ours to settle
    answer["tookOver"] = True
    clock.advance(1)
    assert (pair.role, roles) == (BACKUP, [BACKUP])
    pair.stop()


def test_the_side_that_took_over_keeps_its_role() -> None:
    """The backup that took over stays primary when the thawed peer still says primary."""
    clock = Clock()
    alive = [False]

    def probe() -> defer.Deferred[Any]:
        if alive[0]:
            return defer.succeed({"role": PRIMARY, "tookOver": False})
        return defer.fail(OSError("refused"))

    pair = Pair(clock, BACKUP, "a:5597", probe=probe, detection=1.0, interval=0.25)
    pair.start()
    clock.pump([0.25] * 8)
    assert pair.role == PRIMARY
    alive[0] = True
    clock.pump([0.25] * 8)
    assert (pair.role, pair.took_over) == (PRIMARY, True)
    pair.stop()


def test_probe_timeout_option() -> None:
    """--probe-timeout lands in the config; above --detection it is refused."""
    o = Options()
    o.parseOptions(["--demo", "--detection", "2", "--probe-timeout", "0.5"])
    assert o.config.probe_timeout == 0.5
    with pytest.raises(usage.UsageError, match="--probe-timeout"):
        Options().parseOptions(["--demo", "--detection", "2", "--probe-timeout", "3"])


# --- two real Notifier processes -------------------------------------------------------
DETECTION = 1.0


@pytest.mark.integration
class FrozenPrimary(TestCase):
    """A pair of ``twistd -n notifier``; the primary is stopped with SIGSTOP."""

    timeout = 90

    def setUp(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-pairfreeze-"))
        self.files = pki.ensure_site_pki(self.work / "pki")
        self.link = {side: free_port() for side in "ab"}
        self.control = {side: free_port() for side in "ab"}
        self.procs: dict[str, TwistdProcess] = {}

    def _spawn(self, side: str, role: str) -> None:
        peer = "b" if side == "a" else "a"
        args = ["notifier", "--demo", "--interface=127.0.0.1", f"--port={self.link[side]}"]
        args += [f"--control=tcp:{self.control[side]}:interface=127.0.0.1"]
        args += ["--http-port=off", "--https-port=off", f"--cert={self.files.notifier}"]
        args += [f"--ca={self.files.ca}", f"--trust={self.files.bridge_client}"]
        args += [f"--work-path={self.work / side}", f"--role={role}", f"--cic-name=cic-{side}"]
        args += [f"--peer=127.0.0.1:{self.link[peer]}", f"--detection={DETECTION}"]
        args += [f"--peer-control=http://127.0.0.1:{self.control[peer]}"]
        process = TwistdProcess(self.work, args, log_name=f"notifier-{side}.log")
        self.addCleanup(process.kill)
        self.addCleanup(self._resume, process)  # cleanups run last-in first: SIGCONT, then kill
        self.procs[side] = process

    @staticmethod
    def _resume(process: TwistdProcess) -> None:
        if process.proc.poll() is None:
            os.kill(process.proc.pid, signal.SIGCONT)

    @defer.inlineCallbacks
    def _role(self, side: str) -> Any:
        url = f"http://127.0.0.1:{self.control[side]}/api/state"
        try:
            code, state = yield http_json(reactor, "GET", url)
        except Exception:
            return None
        return state["role"] if code == 200 else None

    @defer.inlineCallbacks
    def _until_role(self, side: str, role: str, deadline: float) -> Any:
        end = time.monotonic() + deadline
        while (yield self._role(side)) != role:
            if self.procs[side].proc.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"{side} not {role} within {deadline}s")
            yield task.deferLater(reactor, 0.05, lambda: None)

    @defer.inlineCallbacks
    def test_backup_takes_over_a_frozen_primary(self) -> Any:
        """SIGSTOP the primary: the backup takes over within the detection time (plus a probe),
        the bridge follows it, an existing session keeps working and a new logon succeeds;
        after SIGCONT the old primary steps down to backup."""
        self._spawn("a", "primary")
        self._spawn("b", "backup")
        yield self._until_role("a", PRIMARY, 45)
        yield self._until_role("b", BACKUP, 45)
        config = BridgeConfig(
            identity=BridgeIdentity("sm1", "localhost", location="Indianapolis"),
            tls=TLSFiles(self.files.bridge, self.files.bridge_client, self.files.ca),
            notifiers=tuple(NotifierAddress("127.0.0.1", self.link[s]) for s in "ab"),
            notifier_name="localhost",
            port=0,
            interface="127.0.0.1",
            allow_cleartext=True,
            ping_interval=0.5,
            upstream_timeout=2.0,
            link_dead_after=3.0,
        )
        bridge = BridgeService(config, reactor)
        bridge.startService()
        self.addCleanup(bridge.stopService)
        yield bridge.when_ready()
        self.assertEqual(bridge.upstream.registered["cic"]["name"], "cic-a")
        url = f"tcp://127.0.0.1:{bridge.port}"
        client = yield connect(reactor, url)
        self.addCleanup(client.close)
        yield client.logon("agent1", "demo")

        os.kill(self.procs["a"].proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        yield self._until_role("b", PRIMARY, 10)
        takeover = time.monotonic() - stopped
        self.assertLess(takeover, DETECTION + 1.5)
        yield poll(
            lambda: bridge.upstream.up and bridge.upstream.registered["cic"]["name"] == "cic-b",
            deadline=20,
        )
        followed = time.monotonic() - stopped
        other = yield connect(reactor, url)
        self.addCleanup(other.close)
        reply = yield other.logon("agent2", "demo")
        self.assertEqual(reply["cic"]["name"], "cic-b")
        yield client.request(c.SET_STATUS, {"status": "Available"})  # the old session works
        yield client.heartbeat()

        os.kill(self.procs["a"].proc.pid, signal.SIGCONT)
        yield self._until_role("a", BACKUP, 10)
        self.assertEqual((yield self._role("b")), PRIMARY)
        print(
            f"\npair freeze figures: backup took over {takeover:.2f} s after SIGSTOP, "
            f"bridge registered with it at {followed:.2f} s"
        )
