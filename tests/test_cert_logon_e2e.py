"""Certificate logon end to end: real TLS on the client port and wss, the real Notifier."""

from __future__ import annotations

import json
import ssl
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import TestCase

from smbridge.client import ClientError, connect
from smbridge.session.hook import HookRunner
from smbridge.testing import poll
from smbridge.testing.cli import spawn_client
from smbridge.testing.client_certs import (
    RecordingHook,
    certificate_logons_on_resumed_tls,
    start_cert_site,
)

pytestmark = pytest.mark.integration


class CertificateSite(TestCase):
    """A site whose users map to client certificates, the bridge asking for them."""

    timeout = 60
    free_failures = 100  # the refusal tests fail many logons from one address

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-certs-"))
        self.certs, self.site = yield start_cert_site(
            reactor, self.work, ws_port=0, logon_free_failures=self.free_failures
        )
        self.addCleanup(self.site.stop)
        self.hook = RecordingHook()
        self.site.bridge.router.hook = HookRunner(self.hook, reactor)

    def dial(self, uri: str, cert: str | None = None) -> Any:
        files = self.certs.clients[cert] if cert else None
        return connect(
            reactor,
            uri,
            ca=self.certs.ca,
            hostname="localhost",
            cert=files.cert if files else None,
            key=files.key if files else None,
        )

    @property
    def tls(self) -> str:
        return f"tls://127.0.0.1:{self.site.client_port}"

    @property
    def wss(self) -> str:
        return f"wss://127.0.0.1:{self.site.wss_port}/cic1/session"

    @defer.inlineCallbacks
    def refused(self, uri: str, cert: str | None, user: str | None = None) -> Any:
        client = yield self.dial(uri, cert)
        try:
            yield client.logon_certificate(user)
        except ClientError as e:
            return e
        finally:
            yield client.close()
        raise AssertionError("the logon was not refused")


class CertificateLogon(CertificateSite):
    @defer.inlineCallbacks
    def test_good_certificate_logs_on_without_password(self) -> Any:
        """A certificate mapped by subject logs agent1 on, over TLS and over wss."""
        for uri in (self.tls, self.wss):
            client = yield self.dial(uri, "agent1")
            reply = yield client.logon_certificate(client_id=uri)
            self.assertEqual(reply["auth"], "certificate")
            self.assertEqual(reply["user"]["id"], "agent1")
            self.assertEqual(reply["certificate"]["subject"], "CN=agent1,O=smbridge")
            self.assertEqual(reply["certificate"]["fingerprint"], self.certs.fingerprint("agent1"))
            yield client.logoff()
            yield client.close()

    @defer.inlineCallbacks
    def test_fingerprint_mapping_and_the_hook_sees_the_identity(self) -> Any:
        """agent2 (mapped by fingerprint) logs on; the hook's info carries the certificate."""
        client = yield self.dial(self.tls, "agent2")
        reply = yield client.logon_certificate("agent2")
        self.assertEqual((reply["user"]["id"], reply["auth"]), ("agent2", "certificate"))
        [info] = self.hook.infos
        self.assertEqual(info.user_id, "agent2")
        self.assertEqual(info.certificate.fingerprint, self.certs.fingerprint("agent2"))
        self.assertEqual(info.certificate.subject, "CN=agent2,O=smbridge")
        self.assertEqual(info.certificate.via, "tls")
        [session] = list(self.site.bridge.router.registry)
        self.assertEqual(session.info.certificate, info.certificate)
        yield client.close()

    @defer.inlineCallbacks
    def test_refusals_carry_their_reason(self) -> Any:
        """Unknown, expired, revoked, untrusted and missing certificates: logon-failed + reason."""
        cases = [
            ("stranger", None, "certificate-unknown"),
            ("expired", None, "certificate-expired"),
            ("revoked", None, "certificate-revoked"),
            ("foreign", None, "certificate-untrusted"),
            (None, None, "no-certificate"),
            ("agent1", "agent2", "certificate-unknown"),  # the named user is not the cert's
        ]
        for uri in (self.tls, self.wss):
            for cert, user, reason in cases:
                e = yield self.refused(uri, cert, user)
                self.assertEqual((e.code, e.body.get("reason")), ("logon-failed", reason))
        self.assertEqual(self.hook.infos, [])
        failures = self.site.bridge.router.counters.get("logon_failures")
        self.assertEqual(failures, 2 * len(cases))

    @defer.inlineCallbacks
    def test_passwords_with_and_without_certificates(self) -> Any:
        """A password user without a certificate logs on; a requireCertificate user cannot."""
        client = yield self.dial(self.tls)
        reply = yield client.logon("agent5", "demo")
        self.assertEqual(reply["auth"], "password")
        self.assertIsNone(self.hook.infos[0].certificate)
        yield client.close()
        client = yield self.dial(self.tls, "agent2")  # even with its certificate presented
        with self.assertRaises(ClientError) as raised:
            yield client.logon("agent2", "demo")
        self.assertEqual(raised.exception.body.get("reason"), "certificate-required")
        yield client.close()
        client = yield self.dial(self.tls)
        with self.assertRaises(ClientError) as raised:
            yield client.logon("agent2", "wrong")
        self.assertEqual(raised.exception.body.get("reason"), "bad-credentials")  # no hint
        yield client.close()

    @defer.inlineCallbacks
    def test_forged_header_on_the_ws_port_gives_no_certificate_logon(self) -> Any:
        """Certificate headers sent straight to the ws port are ignored: no-certificate."""
        from urllib.parse import quote

        from smbridge import pki
        from smbridge.client.ws import BridgeWebSocketFactory

        pem = pki.cert_pem(self.certs.clients["agent1"].certificate).decode()
        original = BridgeWebSocketFactory.__init__

        def forging(factory: Any, bridge: Any, url: str, client_type: str, r: Any) -> None:
            original(factory, bridge, url, client_type, r)
            factory.headers["X-SSL-Client-Cert"] = quote(pem)
            factory.headers["X-SSL-Client-Verify"] = "SUCCESS"

        self.patch(BridgeWebSocketFactory, "__init__", forging)
        e = yield self.refused(f"ws://127.0.0.1:{self.site.ws_port}/cic1/session", None)
        self.assertEqual(e.body.get("reason"), "no-certificate")
        headers = self.site.bridge.tunnel.factories["ws"].proxy_headers
        self.assertEqual(headers.ignored, 1)

    @defer.inlineCallbacks
    def test_cli_logs_on_by_certificate(self) -> Any:
        """``smbridge client --cert --key`` logs on without a password; SIGINT logs off."""
        files = self.certs.clients["agent1"]
        args = [self.tls, "--json", "--cert", str(files.cert), "--key", str(files.key)]
        args += ["--ca", str(self.certs.ca), "--hostname", "localhost"]
        client = spawn_client(self, reactor, args, self.work)
        proc = client.proc
        yield poll(lambda: b"CreateSession" in proc.out or proc.ended.called, deadline=15)
        logon = json.loads(proc.out.decode().splitlines()[0])["payload"]
        self.assertEqual((logon["auth"], logon["user"]["id"]), ("certificate", "agent1"), proc.err)
        client.transport.signalProcess("INT")
        code = yield proc.ended
        self.assertEqual(code, 0, proc.err)

    @defer.inlineCallbacks
    def test_resumed_tls_sessions_keep_the_certificate(self) -> Any:
        """A TLS session resumed by ticket (1.2 and 1.3) still logs on by its certificate."""
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            seen = yield threads.deferToThread(
                certificate_logons_on_resumed_tls,
                self.site.client_port,
                self.certs.ca,
                self.certs.clients["agent1"].cert,
                self.certs.clients["agent1"].key,
                version,
                "resume",
            )
            self.assertEqual(seen, [(False, "certificate"), (True, "certificate")], version)


class CertificateLogonThrottled(CertificateSite):
    free_failures = 5

    @defer.inlineCallbacks
    def test_failed_certificate_logons_are_throttled(self) -> Any:
        """Failed certificate logons count in the logon throttle like wrong passwords."""
        reasons = []
        for _ in range(6):
            e = yield self.refused(self.tls, "stranger")
            reasons.append(e.body.get("reason") or e.code)
        self.assertEqual(reasons, ["certificate-unknown"] * 5 + ["logon-throttled"])
