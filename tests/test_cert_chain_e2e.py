"""Certificate logon with a leaf under an intermediate CA: real TLS, the real Notifier.

The client CA is a root; the client's certificate (CN=agent1) was issued by an
intermediate CA under it. Sent with its chain (leaf + intermediate in the client's
certificate file) it logs on over the client port and wss; the leaf alone does not.
"""

from __future__ import annotations

import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import TestCase

from smbridge import pki
from smbridge.client import ClientError, connect
from smbridge.session.hook import HookRunner
from smbridge.testing.client_certs import (
    RecordingHook,
    certificate_logons_on_resumed_tls,
    start_cert_site,
)

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class ChainFiles:
    """A root (the client CA), an intermediate under it, and agent1's leaf under that."""

    ca: Path  # the root (and whatever else the test lists as client CAs)
    crl: Path  # the root's and the intermediate's CRLs (revoking nothing)
    chain: Path  # leaf + intermediate: what a client sends to be verified
    leaf: Path  # the leaf alone
    key: Path
    certificate: x509.Certificate
    intermediate: x509.Certificate

    @property
    def fingerprint(self) -> str:
        return "sha256:" + self.certificate.fingerprint(hashes.SHA256()).hex()


def _empty_crl(issuer: tuple[Any, x509.Certificate]) -> bytes:
    import datetime

    now = datetime.datetime.now(datetime.UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer[1].subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + datetime.timedelta(days=30))
        .sign(issuer[0], hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.PEM)


def make_chain(
    out: Path, intermediate_is_client_ca: bool = False, intermediate_crl: bool = True
) -> ChainFiles:
    """The files of :class:`ChainFiles` under ``out``; with ``intermediate_is_client_ca``
    the intermediate is in ``ca`` too; without ``intermediate_crl`` its CRL is left out."""
    out.mkdir(parents=True, exist_ok=True)
    root = pki.make_ca("client root CA", path_length=1)
    issuing = pki.issue_intermediate(*root, "client issuing CA")
    key, cert = pki.issue(*issuing, "agent1", client=True, server=False)
    files = ChainFiles(
        out / "client-ca.pem",
        out / "client-crl.pem",
        out / "agent1-chain.pem",
        out / "agent1.pem",
        out / "agent1.key",
        cert,
        issuing[1],
    )
    anchors = [root[1], issuing[1]] if intermediate_is_client_ca else [root[1]]
    files.ca.write_bytes(b"".join(pki.cert_pem(a) for a in anchors))
    files.crl.write_bytes(_empty_crl(root) + (_empty_crl(issuing) if intermediate_crl else b""))
    files.chain.write_bytes(pki.cert_pem(cert) + pki.cert_pem(issuing[1]))
    files.leaf.write_bytes(pki.cert_pem(cert))
    pki.write_private(files.key, pki.key_pem(key))
    return files


class ChainedCertificateLogon(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-chain-"))
        self.files = make_chain(self.work / "chain")
        self.certs, self.site = yield start_cert_site(
            reactor,
            self.work,
            client_ca=self.files.ca,
            client_crl=self.files.crl,
            ws_port=0,
            logon_free_failures=100,
        )
        self.addCleanup(self.site.stop)
        self.hook = RecordingHook()
        self.site.bridge.router.hook = HookRunner(self.hook, reactor)
        self.uris = (
            f"tls://127.0.0.1:{self.site.client_port}",
            f"wss://127.0.0.1:{self.site.wss_port}/cic1/session",
        )

    def dial(self, uri: str, cert: Path) -> Any:
        return connect(
            reactor, uri, ca=self.certs.ca, hostname="localhost", cert=cert, key=self.files.key
        )

    @defer.inlineCallbacks
    def test_leaf_sent_with_its_intermediate_logs_on(self) -> Any:
        """Over TLS and wss, leaf + intermediate logs agent1 on by the leaf's identity."""
        for uri in self.uris:
            client = yield self.dial(uri, self.files.chain)
            reply = yield client.logon_certificate(client_id=uri)
            self.assertEqual((reply["auth"], reply["user"]["id"]), ("certificate", "agent1"))
            self.assertEqual(reply["certificate"]["fingerprint"], self.files.fingerprint)
            self.assertEqual(reply["certificate"]["issuer"], "CN=client issuing CA,O=smbridge")
            yield client.logoff()
            yield client.close()
        self.assertEqual([i.certificate.via for i in self.hook.infos], ["tls", "tls"])

    @defer.inlineCallbacks
    def test_leaf_without_its_intermediate_is_untrusted(self) -> Any:
        """The same leaf sent alone does not chain to the client CA: certificate-untrusted."""
        for uri in self.uris:
            client = yield self.dial(uri, self.files.leaf)
            try:
                with self.assertRaises(ClientError) as raised:
                    yield client.logon_certificate()
            finally:
                yield client.close()
            e = raised.exception
            self.assertEqual(
                (e.code, e.body.get("reason")), ("logon-failed", "certificate-untrusted")
            )
        self.assertEqual(self.hook.infos, [])

    @defer.inlineCallbacks
    def test_a_resumed_tls_session_still_chains(self) -> Any:
        """A TLS session resumed by ticket (1.2 and 1.3) still logs on by the chained leaf."""
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            seen = yield threads.deferToThread(
                certificate_logons_on_resumed_tls,
                self.site.client_port,
                self.certs.ca,
                self.files.chain,
                self.files.key,
                version,
                "chain",
            )
            self.assertEqual(seen, [(False, "certificate"), (True, "certificate")], version)


class ChainedCertificateThroughNginx(TestCase):
    """Behind nginx only the leaf reaches the bridge: the intermediate is a client CA of
    both (nginx's ``ssl_client_certificate`` file and the bridge's ``--client-ca``)."""

    timeout = 90
    intermediate_crl = True

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        import ipaddress

        from smbridge.config import TunnelSettings
        from smbridge.notifier.site import Site
        from smbridge.testing.client_certs import cert_site_dict, make_cert_pki
        from smbridge.tunnel.testing import BASE_MAP, NGINX, need_binary, start_proxied_site

        need_binary(NGINX, "nginx")
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-chain-nginx-"))
        self.files = make_chain(
            self.work / "chain",
            intermediate_is_client_ca=True,
            intermediate_crl=self.intermediate_crl,
        )
        self.certs = make_cert_pki(self.work / "pki")
        data = cert_site_dict(self.certs)
        data["parameters"] = {**data["parameters"], "SM HTTPS URL Base Map": BASE_MAP}
        ca, crl = str(self.files.ca), str(self.files.crl)
        self.proxied = yield start_proxied_site(
            reactor,
            self.work,
            site=Site.from_dict(data),
            client_ca=self.files.ca,
            client_crl=self.files.crl,
            logon_free_failures=100,
            tunnel=TunnelSettings(trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),)),
            proxy_options={"client_ca": ca, "client_crl": crl},
        )
        self.addCleanup(self.proxied.stop)
        self.hook = RecordingHook()
        self.proxied.site.bridge.router.hook = HookRunner(self.hook, reactor)

    @defer.inlineCallbacks
    def logs_on(self, *certs: Path) -> Any:
        for cert in certs:
            client = yield connect(
                reactor,
                f"wss://127.0.0.1:{self.proxied.proxy.port}/edge1/session",
                ca=self.certs.ca,
                cert=cert,
                key=self.files.key,
            )
            reply = yield client.logon_certificate()
            self.assertEqual((reply["auth"], reply["user"]["id"]), ("certificate", "agent1"))
            self.assertEqual(reply["certificate"]["fingerprint"], self.files.fingerprint)
            yield client.logoff()
            yield client.close()
        self.assertEqual([i.certificate.via for i in self.hook.infos], ["proxy"] * len(certs))

    @defer.inlineCallbacks
    def test_leaf_under_an_intermediate_logs_on_through_nginx(self) -> Any:
        """Sent alone or with its intermediate, the leaf passes nginx's verification and
        the bridge's (anchored at the intermediate) and logs agent1 on."""
        self.assertIn("ssl_verify_depth 3;", self.proxied.proxy.config)
        yield self.logs_on(self.files.leaf, self.files.chain)
        self.assertNotIn("verify error", self.proxied.proxy.error_log())  # nginx: SUCCESS


class ChainedCertificateThroughNginxWithoutItsCRL(ChainedCertificateThroughNginx):
    """The CRL file lacks the intermediate's CRL: nginx's verdict is FAILED (it wants a CRL
    from every CA of the chain), the 495 route passes the request on, and the bridge,
    judging for itself (what CRLs there are revoke nothing), lets the leaf log on."""

    intermediate_crl = False

    @defer.inlineCallbacks
    def test_leaf_under_an_intermediate_logs_on_through_nginx(self) -> Any:
        yield self.logs_on(self.files.leaf)
        self.assertIn("unable to get certificate CRL", self.proxied.proxy.error_log())
