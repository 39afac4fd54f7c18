"""Bridge certificate trust on the Notifier: new ones refused and listed, trusted ones accepted."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from smbridge import pki
from smbridge.notifier.trust import (
    NEW,
    TRUSTED,
    CertificateTrust,
    NotTrusted,
    TrustStoreError,
    fingerprint_pem,
)
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


def test_missing_directory_is_created_private_on_first_new_certificate(tmp_path: Path) -> None:
    """A store under missing directories creates them 0700 and refuses with NotTrusted."""
    der, fp = _der(tmp_path)
    path = tmp_path / "work" / "deep" / "trust.json"
    trust = CertificateTrust(path)
    with pytest.raises(NotTrusted):
        trust.check(der, "CN=localhost", 1.0)
    for directory in (tmp_path / "work", tmp_path / "work" / "deep"):
        assert directory.stat().st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o777 == 0o600
    assert CertificateTrust(path).listing()[0]["fingerprint"] == fp


def test_trust_into_a_missing_directory_is_saved_and_reloaded(tmp_path: Path) -> None:
    """Trusting before anything was saved writes the store; a new instance reads it back."""
    der, fp = _der(tmp_path)
    path = tmp_path / "missing" / "trust.json"
    assert CertificateTrust(path).trust(fp)["state"] == TRUSTED
    CertificateTrust(path).check(der, "CN=localhost", 2.0)
    assert [e["state"] for e in CertificateTrust(path).listing()] == [TRUSTED]


def test_save_is_atomic_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails half way keeps the old file whole; success leaves only trust.json."""
    der, fp = _der(tmp_path)
    path = tmp_path / "store" / "trust.json"
    trust = CertificateTrust(path)
    trust.trust(fp)
    before = path.read_bytes()
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    monkeypatch.setattr(os, "replace", _failing_replace)
    with pytest.raises(TrustStoreError):
        trust.trust("ab" * 32)
    assert path.read_bytes() == before
    assert synced, "the temporary file is fsynced before the rename"
    assert sorted(p.name for p in path.parent.iterdir()) == ["trust.json"]
    assert [e["fingerprint"] for e in trust.listing()] == [fp]  # the failed one is rolled back
    monkeypatch.undo()
    trust.trust("ab" * 32)
    assert sorted(p.name for p in path.parent.iterdir()) == ["trust.json"]
    assert len(CertificateTrust(path).listing()) == 2


def _failing_replace(src: Any, dst: Any) -> None:
    raise OSError(28, "No space left on device")


def test_corrupt_store_is_set_aside_and_nothing_is_trusted(tmp_path: Path) -> None:
    """An unreadable store is moved aside (logged) and every certificate counts as new."""
    der, _ = _der(tmp_path)
    path = tmp_path / "trust.json"
    path.write_text("{not json")
    trust = CertificateTrust(path)
    with pytest.raises(NotTrusted):
        trust.check(der, "CN=localhost", 1.0)
    assert (tmp_path / "trust.json.corrupt").read_text() == "{not json"
    assert [e["state"] for e in CertificateTrust(path).listing()] == [NEW]
