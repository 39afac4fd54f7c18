"""A multi-bridge site of real processes: one on-server and two off-server bridges.

``twistd notifier`` with a site file (locations Indianapolis and London) and three
``twistd smbridge`` processes: ``on`` (on-server, Indianapolis), ``off-ind``
(off-server, Indianapolis) and ``off-lon`` (off-server, London), all on 127.0.0.1
with ports picked by the kernel (read back from their logs). Clients type the CIC
host (``tls://localhost:<on's port>``) and use :func:`smbridge.client.logon_anywhere`
or the client's :class:`~smbridge.client.keeper.SessionKeeper`.

The backup-side redirect needs a Notifier pair; it runs with real processes in
tests/test_switchover_processes.py (``BackupSideRedirect``: a bridge pinned to the
backup CIC server).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from smbridge import pki
from smbridge.client import logon_anywhere
from smbridge.client.discovery import default_dial
from smbridge.client.protocol import ClientError
from smbridge.client.roster_cache import RosterCache
from smbridge.codec.catalog import GET_SERVERS
from smbridge.notifier.demo import demo_site_dict
from smbridge.testing import http_json, poll, stop_process

pytestmark = pytest.mark.integration

TWISTD = str(Path(sys.executable).parent / "twistd")
BRIDGES = {  # name: (kind, location)
    "on": ("on-server", "Indianapolis"),
    "off-ind": ("off-server", "Indianapolis"),
    "off-lon": ("off-server", "London"),
}
IND_USER, IND_USER2, LON_USER = "agent1", "agent2", "agent40"  # agent31.. are in London


def site_file(path: Path) -> None:
    """The demo site with three bridges in two locations and no call traffic."""
    data = demo_site_dict()
    data["bridges"] = [
        {
            "name": name,
            "fqdn": "localhost",
            "kind": kind,
            "location": location,
            "ports": {"tls": 1, "ws": 1, "wss": 1},  # the roster shows the ports bound
        }
        for name, (kind, location) in BRIDGES.items()
    ]
    data["selectionRules"] = {"default": ["<This Location>", "<Any Location>"]}
    data["traffic"] = {**data["traffic"], "callsPerSecond": 0}
    path.write_text(yaml.safe_dump(data))


class Process:
    """One twistd process whose output goes to a log file that the test reads."""

    def __init__(self, work: Path, name: str, args: list[str]) -> None:
        self.name = name
        self.path = work / f"{name}.log"
        self.log = self.path.open("wb")
        self.proc = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=work,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def output(self) -> str:
        return self.path.read_text(errors="replace")

    @defer.inlineCallbacks
    def port_of(self, listener: str, deadline: float = 30.0) -> Any:
        """The port that ``listener`` bound (its ``listener.listening`` log line)."""
        pattern = re.compile(rf"{re.escape(listener)} listening on [\d.]+:(\d+)")
        end = time.monotonic() + deadline
        while True:
            found = pattern.search(self.output())
            if found:
                return int(found.group(1))
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > end:
                raise AssertionError(f"{self.name}: no {listener} within {deadline}s")
            yield task.deferLater(reactor, 0.05, lambda: None)

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()

    def kill(self) -> None:
        """A crash: SIGKILL, nothing said to anyone."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()


class MultiBridgeSite(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-roster-e2e-"))
        files = pki.ensure_site_pki(self.work / "pki")
        self.ca = files.ca
        site_file(self.work / "site.yaml")
        self.procs: dict[str, Process] = {}
        notifier = self._spawn(
            "notifier",
            [
                "notifier",
                f"--site={self.work / 'site.yaml'}",
                "--interface=127.0.0.1",
                "--port=0",
                "--control=tcp:0:interface=127.0.0.1",
                "--http-port=off",
                "--https-port=off",
                f"--cert={files.notifier}",
                f"--ca={files.ca}",
                "--trust-any",
                f"--work-path={self.work / 'notifier'}",
            ],
        )
        link = yield notifier.port_of("link")
        control = yield notifier.port_of("control")
        self.control = f"http://127.0.0.1:{control}"
        for name, (kind, location) in BRIDGES.items():
            self._spawn(
                name,
                [
                    "smbridge",
                    f"--name={name}",
                    "--fqdn=localhost",
                    f"--kind={kind}",
                    f"--location={location}",
                    "--port=0",
                    "--interface=127.0.0.1",
                    f"--notifier=127.0.0.1:{link}",
                    "--notifier-name=localhost",
                    f"--cert={files.bridge}",
                    f"--client-cert={files.bridge_client}",
                    f"--ca={files.ca}",
                    "--admin-port=0",
                    "--ws-port=off",
                    "--wss-port=off",
                    f"--work-path={self.work / name}",
                ],
            )
        self.ports: dict[str, int] = {}
        self.admin: dict[str, str] = {}
        for name in BRIDGES:
            self.ports[name] = yield self.procs[name].port_of("client-listener")
            admin = yield self.procs[name].port_of("admin-api")
            self.admin[name] = f"http://127.0.0.1:{admin}"
        yield self._until_roster({name: True for name in BRIDGES})
        self.typed = f"tls://localhost:{self.ports['on']}"
        self.cache_dir = self.work / "client-cache"

    def _spawn(self, name: str, args: list[str]) -> Process:
        proc = Process(self.work, name, args)
        self.procs[name] = proc
        self.addCleanup(proc.stop)
        return proc

    def _until_roster(self, available: dict[str, bool]) -> Any:
        """Wait until the Notifier's bridges are connected and accepting as given."""
        return self._until_bridges("available", available)

    @defer.inlineCallbacks
    def _until_bridges(self, field: str, wanted: dict[str, Any]) -> Any:
        """Wait until the Notifier's view of the bridges shows ``field`` as ``wanted``.

        ``available`` is connected and accepting; ``sessions`` the number of sessions.
        """
        seen: dict[str, Any] = {}

        @defer.inlineCallbacks
        def check() -> Any:
            code, state = yield http_json(reactor, "GET", f"{self.control}/api/state")
            for b in state["bridges"]:
                value = b["connected"] and b["accepting"] if field == "available" else b[field]
                seen[b["name"]] = value

        end = time.monotonic() + 30
        while any(seen.get(n) != v for n, v in wanted.items()):
            if time.monotonic() > end:
                raise AssertionError(f"bridges' {field} never became {wanted}: {seen}")
            yield check()
            yield task.deferLater(reactor, 0.05, lambda: None)

    @defer.inlineCallbacks
    def _logon(self, user: str, password: str = "demo", dialed: list[Any] | None = None) -> Any:
        """logon_anywhere at the typed CIC host; (client, reply).

        Each user has a cache directory of its own (one client machine each), read
        through a new RosterCache object every time (a client restart).
        """
        dial = default_dial(reactor, "localhost", self.ca)

        def recording(target: dict[str, Any]) -> Any:
            if dialed is not None:
                dialed.append(target["name"] or target["port"])
            return dial(target)

        cache = RosterCache(self.cache_dir / user)
        client, reply = yield logon_anywhere(
            reactor, self.typed, user, password, cache=cache, ca=self.ca, dial=recording
        )
        self.addCleanup(client.close)
        return client, reply

    @defer.inlineCallbacks
    def test_site_of_real_processes(self) -> Any:
        """Redirect by location, logon failure, cache, maintenance, stopped bridges."""
        on_port = self.ports["on"]

        # 1. Typing the CIC host: the on-server bridge redirects to the user's location.
        dialed: list[Any] = []
        ind, reply = yield self._logon(IND_USER, dialed=dialed)
        self.assertEqual(reply["server"]["name"], "off-ind")
        self.assertEqual(dialed, [on_port, "off-ind"])
        lon, reply = yield self._logon(LON_USER)
        self.assertEqual((reply["server"]["name"], reply["location"]), ("off-lon", "London"))

        # 2. A logon failure is never turned into a redirect, nor tried elsewhere.
        dialed = []
        with self.assertRaises(ClientError) as failed:
            yield self._logon(IND_USER, password="wrong", dialed=dialed)
        self.assertEqual((failed.exception.code, dialed), ("logon-failed", [on_port]))

        # 3. The roster cache survives a client restart: a new client (new cache object,
        # same directory) follows the cached order straight to its location's bridge.
        cached = RosterCache(self.cache_dir / IND_USER).load("localhost")
        assert cached is not None
        self.assertEqual({e["name"] for e in cached["roster"]}, set(BRIDGES))
        dialed = []
        again, reply = yield self._logon(IND_USER, dialed=dialed)
        self.assertEqual((reply["server"]["name"], dialed), ("off-ind", [on_port, "off-ind"]))
        yield again.logoff()

        # 4. Maintenance on off-ind (admin API): the session there stays, new logons of
        # its location go to the next bridge by the rule (another location's off-server).
        code, mode = yield http_json(
            reactor, "POST", f"{self.admin['off-ind']}/api/mode", {"accept": "maintenance"}
        )
        self.assertEqual((code, mode["accept"], mode["accepting"]), (200, "maintenance", False))
        yield self._until_roster({"off-ind": False})
        dialed = []
        moved, reply = yield self._logon(IND_USER2, dialed=dialed)
        self.assertEqual(reply["server"]["name"], "off-lon")
        # The redirect's roster keeps off-ind (unavailable) in its place; it redirects too.
        self.assertEqual(dialed, [on_port, "off-ind", "off-lon"])
        servers = yield ind.request(GET_SERVERS)  # the existing session on off-ind still works
        self.assertEqual({e["name"]: e["available"] for e in servers["roster"]}["off-ind"], False)
        self.assertIsNone(ind.terminated_reason)
        code, mode = yield http_json(
            reactor, "POST", f"{self.admin['off-ind']}/api/mode", {"accept": "default"}
        )
        self.assertEqual((code, mode["accepting"]), (200, True))
        yield self._until_roster({"off-ind": True})
        yield moved.logoff()

        # 5. Stop off-ind: its client logs on again and lands on the next bridge by the
        # rule (off-lon: the other off-server bridge, before any on-server one).
        closed = ind.closed
        self.procs["off-ind"].stop()
        yield closed
        yield self._until_roster({"off-ind": False})
        dialed = []
        back, reply = yield self._logon(IND_USER, dialed=dialed)
        self.assertEqual(reply["server"]["name"], "off-lon")
        self.assertEqual(dialed, [on_port, "off-ind", "off-lon"])
        yield back.logoff()
        yield lon.logoff()

        # 6. The CIC host's bridge is down too: a client without a cache has nowhere
        # to go, one with the cache (written by an earlier run) still finds off-lon.
        self.procs["on"].stop()
        yield self._until_roster({"on": False})
        with self.assertRaises(ClientError) as nowhere:
            yield self._logon("agent3")
        self.assertEqual(nowhere.exception.code, "no-bridge")
        dialed = []
        cached_client, reply = yield self._logon(IND_USER, dialed=dialed)
        self.assertEqual(reply["server"]["name"], "off-lon")
        self.assertEqual(dialed, [on_port, "off-ind", "off-lon"])
        yield cached_client.logoff()

    @defer.inlineCallbacks
    def test_keeper_follows_a_stopped_bridge_and_a_drain(self) -> Any:
        """The client's keeper relogs by the rule when its bridge stops, and obeys a drain."""
        from smbridge.client.keeper import SessionKeeper
        from smbridge.client.order import Backoff

        keeper = SessionKeeper(
            reactor,
            self.typed,
            IND_USER,
            "demo",
            ca=self.ca,
            cache=RosterCache(self.cache_dir / IND_USER),
            backoff=Backoff(0.05, 1.0, 0.05),
            resume_tries=1,
        )
        events: list[Any] = []
        keeper.add_event_listener(events.append)
        self.addCleanup(keeper.logoff)
        reply = yield keeper.start()
        self.assertEqual(reply["server"]["name"], "off-ind")
        snapshot = yield keeper.watch_queue("Sales")
        self.assertEqual(snapshot["queue"], "Sales")

        def landed(kind: str, count: int) -> bool:
            return sum(1 for e in events if e.kind == kind) >= count

        # off-ind crashes (SIGKILL: no Migrate, no SessionTerminated). The session cannot
        # be resumed there, so the keeper logs on afresh by the reconnect order (its
        # location's group first, then the full list): the on-server bridge redirects,
        # off-ind is gone, off-lon takes it. (A graceful stop sends Migrate instead.)
        self.procs["off-ind"].kill()
        yield poll(lambda: landed("relogged", 1), deadline=30)
        self.assertEqual(keeper.server and keeper.server["name"], "off-lon")
        resync = [e for e in events if e.kind == "resynchronised"]
        self.assertEqual(list(resync[-1].snapshots), ["queue:Sales"])  # the watch came back
        yield self._until_roster({"off-ind": False})

        # Drain off-lon (admin API): maintenance at once, then one Migrate, whose roster
        # for this user holds only the on-server bridge (off-ind is down): it takes it.
        code, answer = yield http_json(
            reactor, "POST", f"{self.admin['off-lon']}/api/mode", {"drain": True, "spread": 0.5}
        )
        self.assertEqual((code, answer["drained"], answer["accept"]), (200, 1, "maintenance"))
        yield poll(lambda: landed("migrated", 1), deadline=30)
        self.assertEqual(keeper.server and keeper.server["name"], "on")
        self.assertFalse(keeper.ended)
        code, status = yield http_json(reactor, "GET", f"{self.admin['off-lon']}/api/status")
        self.assertEqual((code, status["drain"]), (200, {"active": False, "pending": 0}))
        # The keeper destroyed its old session there: the drained bridge is empty.
        yield self._until_bridges("sessions", {"off-lon": 0})
