"""Two real ``twistd notifier`` processes of a pair and real bridges: one roster on both sides."""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from smbridge import pki
from smbridge.client import connect
from smbridge.client.protocol import ClientError
from smbridge.notifier.demo import demo_site_dict
from smbridge.testing import TwistdProcess, free_port, http_json, stop_process

pytestmark = pytest.mark.integration

Roster = dict[str, tuple[bool, Any]]  # name -> (available, cic)


class PairRosterProcesses(TestCase):
    timeout = 150

    def setUp(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-pairroster-"))
        self.files = pki.ensure_site_pki(self.work / "pki")
        self.link = {side: free_port() for side in "ab"}
        self.control = {side: free_port() for side in "ab"}
        self.ports = {name: free_port() for name in ("sm1", "sm-a", "sm-b")}
        self.admin = {name: free_port() for name in self.ports}
        self.notifiers: dict[str, TwistdProcess] = {}
        self.bridges: dict[str, TwistdProcess] = {}
        data = demo_site_dict()
        data["bridges"] = [  # the two on-server bridges are in the site file; sm1 is not
            {"name": name, "fqdn": "localhost", "kind": "on-server",
             "location": "Indianapolis", "ports": {"tls": self.ports[name]}}
            for name in ("sm-a", "sm-b")
        ]  # fmt: skip
        self.site = self.work / "site.yaml"
        self.site.write_text(yaml.safe_dump(data))

    def _notifier(self, side: str, role: str) -> None:
        """One ``twistd notifier`` of the pair, with its own work path (its own machine)."""
        peer = "b" if side == "a" else "a"
        args = ["notifier", f"--site={self.site}", "--interface=127.0.0.1"]
        args += [f"--port={self.link[side]}", "--http-port=off", "--https-port=off"]
        args += [f"--control=tcp:{self.control[side]}:interface=127.0.0.1"]
        args += [f"--cert={self.files.notifier}", f"--ca={self.files.ca}"]
        args += [f"--trust={self.files.bridge_client}", f"--work-path={self.work / side}"]
        args += [f"--role={role}", f"--cic-name=cic-{side}", "--detection=1.0"]
        args += [f"--peer=127.0.0.1:{self.link[peer]}"]
        args += [f"--peer-control=http://127.0.0.1:{self.control[peer]}"]
        starts = sum(1 for p in self.work.glob(f"notifier-{side}-*.log"))
        process = TwistdProcess(self.work, args, log_name=f"notifier-{side}-{starts}.log")
        self.addCleanup(process.kill)
        self.notifiers[side] = process

    def _bridge(self, name: str, kind: str, sides: str) -> None:
        """A ``twistd smbridge``: pinned to its one server, or following the primary."""
        args = ["smbridge", "--name", name, "--fqdn", "localhost", "--kind", kind]
        args += ["--location", "Indianapolis", "--notifier-name", "localhost"]
        for side in sides:
            args += ["--notifier", f"127.0.0.1:{self.link[side]}"]
        if len(sides) == 1:
            args += ["--switchover-mode", "pinned"]
        args += ["--port", str(self.ports[name]), "--interface", "127.0.0.1"]
        args += ["--admin-port", str(self.admin[name]), "--ws-port", "off", "--wss-port", "off"]
        args += ["--work-path", str(self.work)]
        process = TwistdProcess(self.work, args, log_name=f"{name}.log")
        self.addCleanup(process.kill)
        self.bridges[name] = process

    @defer.inlineCallbacks
    def _get(self, url: str) -> Any:
        try:
            code, body = yield http_json(reactor, "GET", url)
        except Exception:
            return None
        return body if code == 200 else None

    @defer.inlineCallbacks
    def _until(self, fetch: Callable[[], Any], check: Callable[[Any], bool], what: str) -> Any:
        seen = None
        for _ in range(600):  # bounded: 600 x 0.05 s
            seen = yield fetch()
            if seen is not None and check(seen):
                return seen
            yield task.deferLater(reactor, 0.05, lambda: None)
        raise AssertionError(f"never {what}: {seen}")

    def _state(self, side: str) -> Any:
        return self._get(f"http://127.0.0.1:{self.control[side]}/api/state")

    def _roster_of(self, side: str, check: Callable[[Roster], bool], what: str) -> Any:
        def roster(state: Any) -> Roster:
            return {e["name"]: (e["available"], e.get("cic")) for e in state["roster"]}

        d = self._until(lambda: self._state(side), lambda s: check(roster(s)), f"{side}: {what}")
        return d.addCallback(roster)

    def _up(self, name: str) -> Any:
        url = f"http://127.0.0.1:{self.admin[name]}/api/status"
        return self._until(
            lambda: self._get(url), lambda s: s["notifier"]["state"] == "up", f"{name} up"
        )

    @defer.inlineCallbacks
    def _redirect(self, name: str) -> Any:
        """Log on at bridge ``name``; it must redirect: answer the redirect's body."""
        client = yield connect(reactor, f"tls://localhost:{self.ports[name]}", ca=self.files.ca)
        self.addCleanup(client.close)
        try:
            yield client.logon("agent1", "demo")
        except ClientError as e:
            self.assertEqual(e.code, "redirect")
            return e.body
        raise AssertionError(f"{name} accepted the logon")

    @defer.inlineCallbacks
    def test_one_roster_for_the_pair(self) -> Any:
        """Both sides list the same bridges; the backup side redirects to live ones, primary's
        first; a retirement on one side shows on the other and survives restarts of both."""
        self._notifier("a", "primary")
        self._notifier("b", "backup")
        for side, role in (("a", "primary"), ("b", "backup")):
            yield self._until(
                lambda s=side: self._state(s), lambda st, r=role: st["role"] == r, role
            )
        self._bridge("sm1", "off-server", "ab")  # follows the primary; not in the site file
        self._bridge("sm-a", "on-server", "a")  # each CIC server's own bridge, pinned to it
        self._bridge("sm-b", "on-server", "b")
        for name in self.bridges:
            yield self._up(name)

        def every(r: Roster) -> bool:
            return all(r.get(n, (False,))[0] for n in ("sm1", "sm-a", "sm-b"))

        on_b = yield self._roster_of("b", every, "every bridge available on the backup")
        on_a = yield self._roster_of("a", every, "every bridge available on the primary")
        self.assertEqual(on_a, on_b)
        self.assertEqual(on_b["sm-a"], (True, {"name": "cic-a", "role": "primary"}))
        self.assertEqual(on_b["sm-b"], (True, {"name": "cic-b", "role": "backup"}))
        self.assertEqual(on_b["sm1"], (True, None))

        body = yield self._redirect("sm-b")  # the backup side: live bridges, listed live
        self.assertEqual(body["reason"], "backup")
        listed = {e["name"]: e["available"] for e in body["roster"]}
        self.assertEqual(listed, {"sm1": True, "sm-a": True})

        url = f"http://127.0.0.1:{self.admin['sm1']}/api/mode"
        code, _ = yield http_json(reactor, "POST", url, {"accept": "maintenance"})
        self.assertEqual(code, 200)
        for _ in range(12):  # each redirect orders its groups afresh: primary's always first
            body = yield self._redirect("sm1")
            names = [e["name"] for e in body["roster"]]
            self.assertLess(names.index("sm-a"), names.index("sm-b"), names)
        code, _ = yield http_json(reactor, "POST", url, {"accept": "default"})
        self.assertEqual(code, 200)

        self.bridges["sm-b"].kill()  # down: now it may be retired, on the other side
        yield self._roster_of("a", lambda r: r["sm-b"][0] is False, "sm-b down")
        code, answer = yield http_json(
            reactor,
            "POST",
            f"http://127.0.0.1:{self.control['a']}/api/bridges/retire",
            {"name": "sm-b"},
        )
        self.assertEqual(code, 200, answer)
        yield self._roster_of("b", lambda r: "sm-b" not in r, "the retirement shown")

        # Each side keeps it on its own: the primary crashes, the backup restarts alone
        # (and takes over), then the old primary comes back as the backup.
        os.kill(self.notifiers["a"].proc.pid, signal.SIGKILL)
        self.notifiers["a"].proc.wait(timeout=10)
        stop_process(self.notifiers["b"].proc)
        self._notifier("b", "backup")
        state = yield self._until(
            lambda: self._state("b"), lambda s: s["role"] == "primary", "b took over"
        )
        roster = {e["name"] for e in state["roster"]}
        self.assertEqual(roster, {"sm1", "sm-a"})  # sm-b still retired, from b's own file
        self._notifier("a", "backup")
        yield self._until(lambda: self._state("a"), lambda s: s["role"] == "backup", "a back")
        on_a = yield self._roster_of(
            "a", lambda r: r.get("sm1", (False,))[0], "sm1 live on b, seen from a"
        )
        self.assertNotIn("sm-b", on_a)
