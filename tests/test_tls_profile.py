"""Every TLS listener against Mozilla's "intermediate" profile: TLS 1.2+, its AEAD suites."""

from __future__ import annotations

import socket
import ssl
import tempfile
import warnings
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import SkipTest, TestCase

from smbridge.pki import MOZILLA_INTERMEDIATE_CIPHERS
from smbridge.testing import start_site

INTERMEDIATE = set(MOZILLA_INTERMEDIATE_CIPHERS.split(":"))


def handshake(
    port: int, version: ssl.TLSVersion, cipher: str | None = None, identity: Path | None = None
) -> tuple[str, str] | None:
    """One TLS handshake pinned to ``version`` (and ``cipher``); None when refused."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = version
    try:
        ctx.set_ciphers(f"{cipher or 'ALL'}:@SECLEVEL=0")
    except ssl.SSLError:
        return None  # this client cannot even offer it
    if identity is not None:
        ctx.load_cert_chain(identity)
    try:
        with socket.create_connection(("127.0.0.1", port), 5) as raw:
            with ctx.wrap_socket(raw) as tls:
                name = tls.cipher()
                return str(tls.version()), name[0] if name else ""
    except (ssl.SSLError, OSError):
        return None


class TLSProfile(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        work = Path(tempfile.mkdtemp(prefix="smbridge-tls-"))
        self.site = yield start_site(reactor, work, wss_port=0, resources=True)
        self.addCleanup(self.site.stop)
        s = self.site
        client_id = s.pki.bridge_client
        self.listeners: dict[str, tuple[int, Path | None]] = {
            "bridge client listener": (s.client_port, None),
            "bridge tunnel (wss)": (s.wss_port, None),
            "notifier link": (s.link_port, client_id),
            "notifier resources (https)": (s.https_port, None),
        }

    def _probe(self, port: int, version: ssl.TLSVersion, **kw: Any) -> defer.Deferred[Any]:
        return threads.deferToThread(handshake, port, version, **kw)

    @defer.inlineCallbacks
    def test_only_tls12_and_tls13(self) -> Any:
        """TLS 1.0 and 1.1 are refused and TLS 1.2 and 1.3 accepted on every listener."""
        for name, (port, identity) in self.listeners.items():
            for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
                result = yield self._probe(port, old, identity=identity)
                self.assertIsNone(result, f"{name} accepted {old.name}")
            tls12 = yield self._probe(port, ssl.TLSVersion.TLSv1_2, identity=identity)
            tls13 = yield self._probe(port, ssl.TLSVersion.TLSv1_3, identity=identity)
            self.assertEqual(tls12 and tls12[0], "TLSv1.2", name)
            self.assertEqual(tls13 and tls13[0], "TLSv1.3", name)

    @defer.inlineCallbacks
    def test_tls12_suites_are_within_intermediate(self) -> Any:
        """Every TLS 1.2 suite a listener agrees to is one of Mozilla intermediate's."""
        offered = [
            c["name"]
            for c in ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).get_ciphers()
            if c["protocol"] == "TLSv1.2"
        ]
        self.assertGreater(len(offered), 5)
        for name, (port, identity) in self.listeners.items():
            accepted = []
            for cipher in offered:
                result = yield self._probe(
                    port, ssl.TLSVersion.TLSv1_2, cipher=cipher, identity=identity
                )
                if result is not None:
                    accepted.append(result[1])
            self.assertTrue(accepted, name)
            self.assertLessEqual(set(accepted), INTERMEDIATE, name)

    @defer.inlineCallbacks
    def test_sslyze_mozilla_intermediate(self) -> Any:
        """sslyze's Mozilla "intermediate" check passes on the listeners without client certs."""
        import os
        import shutil
        import subprocess
        from pathlib import Path

        # sslyze pins an older cryptography than the project's, so it lives in its own
        # environment (.venv-tools, made by `make test` and .ci/run), not in .venv.
        tool = Path(__file__).resolve().parent.parent / ".venv-tools" / "bin" / "sslyze"
        sslyze = str(tool) if tool.exists() else shutil.which("sslyze")
        if sslyze is None:
            if os.environ.get("CI"):
                self.fail("sslyze is missing: `make test` installs it in .venv-tools")
            raise SkipTest("sslyze is not installed (make .venv-tools/.installed)")
        checked = []
        for name, (port, identity) in self.listeners.items():
            if identity is not None:
                continue  # the Notifier link needs a client certificate; probed above
            cmd = [
                sslyze,
                "--mozilla_config=intermediate",
                f"--certinfo_ca_file={self.site.pki.ca}",
            ]
            done = yield threads.deferToThread(
                subprocess.run, [*cmd, f"127.0.0.1:{port}"], capture_output=True, timeout=120
            )
            self.assertEqual(done.returncode, 0, f"{name}: {done.stdout[-2000:]!r}")
            self.assertIn(b"OK - Compliant.", done.stdout, f"{name}: {done.stdout[-600:]!r}")
            checked.append(name)
        self.assertEqual(len(checked), 3)  # client listener, wss tunnel, Notifier's https
