"""Bridge certificate trust on the Notifier: new ones refused and listed, trusted ones accepted."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from smbridge import pki
from smbridge.notifier.trust import NEW, TRUSTED, CertificateTrust, NotTrusted, fingerprint_pem
from smbridge.testing import http_json, poll, start_site


def _der(tmp: Path) -> tuple[bytes, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    files = pki.ensure_site_pki(tmp / "pki")
    cert = x509.load_pem_x509_certificate(files.bridge_client.read_bytes())
    return cert.public_bytes(serialization.Encoding.DER), fingerprint_pem(files.bridge_client)


def test_unknown_certificate_is_recorded_new_and_refused(tmp_path: Path) -> None:
    """A first-seen certificate is refused with its fingerprint and listed as new."""
    der, fp = _der(tmp_path)
    trust = CertificateTrust(tmp_path / "trust.json")
    with pytest.raises(NotTrusted) as raised:
        trust.check(der, "CN=localhost", 10.0)
    assert raised.value.payload()["fingerprint"] == fp
    assert raised.value.code == "certificate-not-trusted"
    assert trust.listing() == [
        {"fingerprint": fp, "state": NEW, "subject": "CN=localhost", "firstSeen": 10.0}
    ]


def test_trusted_certificate_passes_and_survives_a_restart(tmp_path: Path) -> None:
    """Trusting by fingerprint (colons, upper case) lets it in, also after reloading the file."""
    der, fp = _der(tmp_path)
    trust = CertificateTrust(tmp_path / "trust.json")
    with pytest.raises(NotTrusted):
        trust.check(der, "CN=localhost", 1.0)
    spaced = ":".join(fp[i : i + 2] for i in range(0, 64, 2)).upper()
    assert trust.trust(spaced)["state"] == TRUSTED
    trust.check(der, "CN=localhost", 2.0)
    again = CertificateTrust(tmp_path / "trust.json")
    again.check(der, "CN=localhost", 3.0)
    assert again.listing()[0]["state"] == TRUSTED


def test_pre_trusted_file_and_missing_certificate(tmp_path: Path) -> None:
    """A PEM given up front is trusted; a link without a certificate is refused."""
    der, _ = _der(tmp_path)
    trust = CertificateTrust(trusted_files=[pki.SitePKI.in_dir(tmp_path / "pki").bridge_client])
    trust.check(der, "CN=localhost", 1.0)
    with pytest.raises(NotTrusted):
        trust.check(None, "", 1.0)
    with pytest.raises(ValueError):
        trust.trust("not-hex")


class TrustEndToEnd(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_new_bridge_waits_until_trusted(self) -> Any:
        """An untrusted bridge is refused, listed as new; trusting it brings the link up."""
        site = yield start_site(
            reactor,
            Path(tempfile.mkdtemp(prefix="smbridge-trust-")),
            trust_bridge=False,
            wait_for_link=False,
        )
        self.addCleanup(site.stop)
        upstream = site.bridge.upstream
        yield poll(lambda: upstream.last_error is not None, deadline=10)
        self.assertIn("not trusted", upstream.last_error)
        self.assertFalse(upstream.up)
        code, listed = yield http_json(reactor, "GET", f"{site.control_url}/api/certificates")
        self.assertEqual(code, 200)
        (entry,) = listed["certificates"]
        self.assertEqual(entry["state"], "new")
        self.assertEqual(entry["fingerprint"], fingerprint_pem(site.pki.bridge_client))
        url = f"{site.control_url}/api/certificates/{entry['fingerprint']}/trust"
        code, trusted = yield http_json(reactor, "POST", url, {})
        self.assertEqual((code, trusted["state"]), (200, "trusted"))
        yield poll(lambda: upstream.up, deadline=40)
        code, bad = yield http_json(
            reactor, "POST", f"{site.control_url}/api/certificates/zz/trust", {}
        )
        self.assertEqual(code, 400)
