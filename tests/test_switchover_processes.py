"""Real Notifier processes (twistd notifier --role/--peer): switchover, SIGKILL, switch back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from smbridge import pki
from smbridge.client import connect
from smbridge.config import BridgeConfig, NotifierAddress, TLSFiles
from smbridge.router.router import BridgeIdentity
from smbridge.service import BridgeService
from smbridge.testing import SwitchoverWatcher, TwistdProcess, free_port, http_json, poll

SESSIONS = 200  # over the 50 demo agents, four sessions each


class PairProcesses(TestCase):
    """Two ``twistd notifier`` processes of a pair, started by the test (``_spawn``)."""

    timeout = 120

    def setUp(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-procs-"))
        self.files = pki.ensure_site_pki(self.work / "pki")
        self.link = {side: free_port() for side in "ab"}
        self.control = {side: free_port() for side in "ab"}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, side: str, role: str, site: Path | None = None) -> None:
        peer = "b" if side == "a" else "a"
        args = [
            sys.executable,
            "-m",
            "twisted",
            "notifier",
            f"--site={site}" if site is not None else "--demo",
            "--interface=127.0.0.1",
            f"--port={self.link[side]}",
            f"--control=tcp:{self.control[side]}:interface=127.0.0.1",
            "--http-port=off",
            "--https-port=off",
            f"--cert={self.files.notifier}",
            f"--ca={self.files.ca}",
            f"--trust={self.files.bridge_client}",
            f"--trust-store={self.work / f'trust-{side}.json'}",
            f"--role={role}",
            f"--cic-name=cic-{side}",
            f"--peer=127.0.0.1:{self.link[peer]}",
            f"--peer-control=http://127.0.0.1:{self.control[peer]}",
            "--detection=1.0",
        ]
        log = open(self.work / f"notifier-{side}.log", "ab")  # noqa: SIM115
        self.addCleanup(log.close)
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.work)
        self.procs[side] = proc
        self.addCleanup(self._kill, proc)

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    @defer.inlineCallbacks
    def _state(self, side: str) -> Any:
        url = f"http://127.0.0.1:{self.control[side]}/api/state"
        try:
            code, state = yield http_json(reactor, "GET", url)
        except Exception:
            return None
        return state if code == 200 else None

    @defer.inlineCallbacks
    def _wait_role(self, side: str, role: str) -> Any:
        seen: dict[str, Any] = {}

        @defer.inlineCallbacks
        def check() -> Any:
            seen["state"] = yield self._state(side)

        for _ in range(200):  # bounded: 200 x 0.05 s
            yield check()
            if seen["state"] is not None and seen["state"]["role"] == role:
                return seen["state"]
            yield task.deferLater(reactor, 0.05, lambda: None)
        raise AssertionError(f"notifier {side} never became {role}: {seen}")

    @defer.inlineCallbacks
    def _publish(self, side: str, tag: str) -> Any:
        call = {"id": f"{tag}-Sales", "state": "alerting", "queue": "Sales"}
        body = {"queue": "Sales", "added": [call], "changed": [], "removed": []}
        url = f"http://127.0.0.1:{self.control[side]}/api/publish"
        payload = {"objectType": 173, "eventId": 3, "topic": "queue:Sales", "payload": body}
        code, answer = yield http_json(reactor, "POST", url, payload)
        self.assertEqual((code, answer["delivered"]), (200, 1))


class NotifierProcesses(PairProcesses):
    @defer.inlineCallbacks
    def _switched(self, count: int, side: str, tag: str) -> Any:
        yield poll(lambda: all(w.completed() >= count for w in self.watchers), deadline=30)
        self.assertEqual(self.bridge.upstream.registered["cic"]["name"], f"cic-{side}")
        yield self._publish(side, tag)
        yield poll(lambda: all(f"{tag}-Sales" in w.events for w in self.watchers), deadline=30)

    @defer.inlineCallbacks
    def test_pair_of_processes(self) -> Any:
        """Switch over, SIGKILL the primary, restart it as backup, switch back; all survive."""
        self._spawn("a", "primary")
        self._spawn("b", "backup")
        yield self._wait_role("a", "primary")
        yield self._wait_role("b", "backup")
        for side in "ab":
            url = f"http://127.0.0.1:{self.control[side]}/api/traffic"
            yield http_json(reactor, "POST", url, {"callsPerSecond": 0})
        config = BridgeConfig(
            identity=BridgeIdentity("sm1", "localhost", location="Indianapolis"),
            tls=TLSFiles(self.files.bridge, self.files.bridge_client, self.files.ca),
            notifiers=(
                NotifierAddress("127.0.0.1", self.link["a"]),
                NotifierAddress("127.0.0.1", self.link["b"]),
            ),
            notifier_name="localhost",
            port=0,
            interface="127.0.0.1",
            allow_cleartext=True,
        )
        self.bridge = BridgeService(config, reactor)
        self.bridge.startService()
        self.addCleanup(self.bridge.stopService)
        yield self.bridge.when_ready()
        self.watchers: list[SwitchoverWatcher] = []
        for n in range(1, SESSIONS + 1):
            client = yield connect(reactor, f"tcp://127.0.0.1:{self.bridge.port}")
            self.addCleanup(client.close)
            user = f"agent{(n - 1) % 50 + 1}"
            yield client.logon(user, "demo")
            yield client.watch_queue("Sales")
            self.watchers.append(SwitchoverWatcher(client, user, "Sales"))
        for w in self.watchers:
            w.loop()
        yield poll(lambda: all(w.outcomes.get("ok") for w in self.watchers), deadline=30)

        url = f"http://127.0.0.1:{self.control['a']}/api/switchover"
        code, answer = yield http_json(reactor, "POST", url, {})
        self.assertEqual((code, answer["role"], answer["peerTold"]), (200, "backup", True))
        yield self._switched(1, "b", "one")

        os.kill(self.procs["b"].pid, signal.SIGKILL)  # the primary crashes
        self.procs["b"].wait(timeout=10)
        yield self._wait_role("a", "primary")
        yield self._switched(2, "a", "two")

        self._spawn("b", "backup")
        yield self._wait_role("b", "backup")
        url = f"http://127.0.0.1:{self.control['b']}/api/traffic"
        yield http_json(reactor, "POST", url, {"callsPerSecond": 0})
        url = f"http://127.0.0.1:{self.control['a']}/api/switchover"
        code, answer = yield http_json(reactor, "POST", url, {})
        self.assertEqual((code, answer["peerTold"]), (200, True))
        yield self._switched(3, "b", "three")

        for w in self.watchers:
            w.running = False
        yield defer.gatherResults([w.done for w in self.watchers])
        self.assertEqual(len(self.bridge.registry), SESSIONS)
        for w in self.watchers:
            self.assertIsNone(w.client.terminated_reason, w.user)
            self.assertEqual(sum(w.outcomes.values()), w.sent, w.user)
            self.assertEqual((w.client.protocol.pending, w.unmatched), (0, 0), w.user)
            self.assertLessEqual(set(w.outcomes), {"ok", "upstream-unavailable"}, w.user)
            phases = [s["phase"] for s in w.switchovers]
            self.assertEqual((phases.count("started"), phases.count("completed")), (3, 3))


class BackupSideRedirect(PairProcesses):
    """A bridge pinned to the backup CIC server redirects every logon, primary side first."""

    timeout = 90

    def _bridge(self, name: str, kind: str, sides: str, pinned: bool) -> int:
        """A ``twistd smbridge`` process; returns its admin port."""
        admin = free_port()
        args = ["smbridge", "--name", name, "--fqdn", "localhost", "--kind", kind]
        args += ["--location", "Indianapolis", "--notifier-name", "localhost"]
        for side in sides:
            args += ["--notifier", f"127.0.0.1:{self.link[side]}"]
        if pinned:
            args += ["--switchover-mode", "pinned"]
        args += ["--port", str(self.ports[name]), "--interface", "127.0.0.1"]
        args += ["--admin-port", str(admin), "--ws-port", "off", "--wss-port", "off"]
        args += ["--work-path", str(self.work)]
        process = TwistdProcess(self.work, args, log_name=f"{name}.log")
        self.addCleanup(process.kill)
        return admin

    @defer.inlineCallbacks
    def _status(self, admin: int) -> Any:
        try:
            code, status = yield http_json(reactor, "GET", f"http://127.0.0.1:{admin}/api/status")
        except Exception:
            return None
        return status if code == 200 else None

    @defer.inlineCallbacks
    def _until(self, admin: int, check: Any, what: str) -> Any:
        for _ in range(400):  # bounded: 400 x 0.05 s
            status = yield self._status(admin)
            if status is not None and check(status):
                return status
            yield task.deferLater(reactor, 0.05, lambda: None)
        raise AssertionError(f"never {what}: {status}")

    @defer.inlineCallbacks
    def test_backup_side_bridge_redirects_until_its_server_is_primary(self) -> Any:
        """sm2 on cic-b (backup) redirects to sm1; after a switchover sm2 takes logons itself."""
        from smbridge.client import logon_anywhere
        from smbridge.client.discovery import default_dial
        from smbridge.client.protocol import ClientError
        from smbridge.notifier.demo import demo_site_dict

        self.ports = {"sm1": free_port(), "sm2": free_port()}
        data = demo_site_dict()
        data["bridges"] = [
            {"name": "sm1", "fqdn": "localhost", "kind": "off-server",
             "location": "Indianapolis", "ports": {"tls": self.ports["sm1"]}},
            {"name": "sm2", "fqdn": "localhost", "kind": "on-server",
             "location": "Indianapolis", "ports": {"tls": self.ports["sm2"]}},
        ]  # fmt: skip
        site = self.work / "site.yaml"
        site.write_text(yaml.safe_dump(data))
        self._spawn("a", "primary", site)
        self._spawn("b", "backup", site)
        yield self._wait_role("a", "primary")
        yield self._wait_role("b", "backup")
        admin1 = self._bridge("sm1", "off-server", "ab", pinned=False)
        admin2 = self._bridge("sm2", "on-server", "b", pinned=True)
        yield self._until(admin1, lambda s: s["accepting"], "sm1 accepting")
        status = yield self._until(
            admin2, lambda s: s["notifier"]["state"] == "up", "sm2 registered on cic-b"
        )
        self.assertEqual(status["notifier"]["cic"], {"name": "cic-b", "role": "backup"})
        self.assertEqual((status["accepting"], status["acceptReason"]), (False, "backup"))

        dial = default_dial(reactor, "localhost", self.files.ca)
        dialed: list[Any] = []

        def recording(target: dict[str, Any]) -> Any:
            dialed.append(target["name"] or target["port"])
            return dial(target)

        typed = f"tls://localhost:{self.ports['sm2']}"
        logon: dict[str, Any] = {"ca": self.files.ca, "dial": recording}
        client, reply = yield logon_anywhere(reactor, typed, "agent1", "demo", **logon)
        self.addCleanup(client.close)
        self.assertEqual(reply["server"]["name"], "sm1")  # redirected: backup side
        self.assertEqual(dialed, [self.ports["sm2"], "sm1"])
        with self.assertRaises(ClientError) as failed:  # a wrong password stays a failure
            yield logon_anywhere(reactor, typed, "agent1", "wrong", **logon)
        self.assertEqual(failed.exception.code, "logon-failed")
        status = yield self._status(admin2)
        self.assertEqual(status["sessions"]["total"], 0)

        url = f"http://127.0.0.1:{self.control['a']}/api/switchover"
        code, answer = yield http_json(reactor, "POST", url, {})
        self.assertEqual((code, answer["peerTold"]), (200, True))
        yield self._wait_role("b", "primary")
        # sm2's link was dropped; it registered again and reads cic-b's new role. It is
        # an on-server bridge now on the primary: it redirects only while an off-server
        # one (sm1, which followed the primary to cic-b) is available, and accepts
        # everyone in accept mode "all".
        yield self._until(
            admin2,
            lambda s: (
                s["notifier"]["cic"] == {"name": "cic-b", "role": "primary"}
                and s["acceptReason"] == "off-server-available"
            ),
            "sm2 on the primary, behind the available off-server sm1",
        )
        code, _ = yield http_json(
            reactor, "POST", f"http://127.0.0.1:{admin2}/api/mode", {"accept": "all"}
        )
        self.assertEqual(code, 200)
        dialed.clear()
        other, reply = yield logon_anywhere(reactor, typed, "agent2", "demo", **logon)
        self.addCleanup(other.close)
        self.assertEqual(reply["server"]["name"], "sm2")
        self.assertEqual(dialed, [self.ports["sm2"]])
