"""A real ``twistd notifier`` whose work path is missing: trust is saved and survives a restart."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from smbridge import pki
from smbridge.config import BridgeConfig, NotifierAddress, TLSFiles
from smbridge.notifier.trust import fingerprint_pem
from smbridge.router.router import BridgeIdentity
from smbridge.service import BridgeService
from smbridge.testing import TwistdProcess, free_port, http_json, poll, stop_process

pytestmark = pytest.mark.integration


class TrustStoreProcess(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-trustproc-"))
        self.files = pki.ensure_site_pki(self.work / "pki")
        self.store_dir = self.work / "missing" / "notifier-work"
        self.link = free_port()
        self.control = free_port()
        self.url = f"http://127.0.0.1:{self.control}"
        self.starts = 0

    @defer.inlineCallbacks
    def _start_notifier(self) -> Any:
        self.starts += 1
        args = ["notifier", "--demo", "--interface=127.0.0.1", f"--port={self.link}"]
        args += [f"--control=tcp:{self.control}:interface=127.0.0.1"]
        args += ["--http-port=off", "--https-port=off"]
        args += [f"--cert={self.files.notifier}", f"--ca={self.files.ca}"]
        args += [f"--work-path={self.store_dir}"]
        process = TwistdProcess(self.work, args, log_name=f"notifier-{self.starts}.log")
        self.addCleanup(process.kill)
        for _ in range(600):  # bounded: 600 x 0.05 s
            if process.proc.poll() is not None:
                raise AssertionError(f"twistd exited:\n{process.output()}")
            try:
                code, _ = yield http_json(reactor, "GET", f"{self.url}/api/state")
            except Exception:
                code = None
            if code == 200:
                return process
            yield task.deferLater(reactor, 0.05, lambda: None)
        raise AssertionError(f"the control API never answered:\n{process.output()}")

    @defer.inlineCallbacks
    def _certificates(self) -> Any:
        code, body = yield http_json(reactor, "GET", f"{self.url}/api/certificates")
        self.assertEqual(code, 200)
        return {e["fingerprint"]: e["state"] for e in body["certificates"]}

    @defer.inlineCallbacks
    def test_trust_with_a_missing_work_path_survives_a_restart(self) -> Any:
        """The new bridge is listed, trusted (200), and after a restart still trusted and let in."""
        self.assertFalse(self.store_dir.parent.exists())
        notifier = yield self._start_notifier()
        config = BridgeConfig(
            identity=BridgeIdentity("sm1", "localhost", location="Indianapolis"),
            tls=TLSFiles(self.files.bridge, self.files.bridge_client, self.files.ca),
            notifiers=(NotifierAddress("127.0.0.1", self.link),),
            notifier_name="localhost",
            port=0,
            interface="127.0.0.1",
            admin_port=None,
        )
        bridge = BridgeService(config, reactor)
        bridge.startService()
        self.addCleanup(bridge.stopService)
        fp = fingerprint_pem(self.files.bridge_client)
        seen: dict[str, Any] = {}

        @defer.inlineCallbacks
        def listed() -> Any:
            seen.update((yield self._certificates()))

        for _ in range(300):  # bounded: the bridge's first attempt is listed as new
            yield listed()
            if seen.get(fp) == "new":
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(seen.get(fp), "new")
        self.assertIn("not trusted", bridge.upstream.last_error or "")
        self.assertNotIn("internal-error", notifier.output())
        self.assertNotIn("Traceback", notifier.output())

        code, answer = yield http_json(
            reactor, "POST", f"{self.url}/api/certificates/{fp}/trust", {}
        )
        self.assertEqual((code, answer["state"]), (200, "trusted"))
        self.assertEqual(self.store_dir.stat().st_mode & 0o777, 0o700)
        self.assertEqual((self.store_dir / "trust.json").stat().st_mode & 0o777, 0o600)
        yield poll(lambda: bridge.upstream.up, deadline=40)

        stop_process(notifier.proc)  # SIGTERM: a normal restart
        notifier.kill()
        yield poll(lambda: not bridge.upstream.up, deadline=20)
        yield self._start_notifier()
        certificates = yield self._certificates()
        self.assertEqual(certificates, {fp: "trusted"})
        yield poll(lambda: bridge.upstream.up, deadline=60)
        code, state = yield http_json(reactor, "GET", f"{self.url}/api/state")
        self.assertEqual([(b["name"], b["connected"]) for b in state["bridges"]], [("sm1", True)])
