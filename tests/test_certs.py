"""``smbridge certs``: keys, CSRs and CA-signed certificates for a CIC pair and a bridge."""

from __future__ import annotations

import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from twisted.internet import defer
from twisted.trial.unittest import TestCase

from smbridge import pki
from smbridge.cli import main
from smbridge.config import BridgeConfig, NotifierAddress, TLSFiles
from smbridge.notifier.tap import Options, make_notifier_service
from smbridge.router.router import BridgeIdentity
from smbridge.service import BridgeService
from smbridge.testing import poll


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_certs_for_primary_backup_and_bridge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--new-ca writes a CA, then key, CSR and signed PEM for both servers and the bridge."""
    out = tmp_path / "certs"
    main(["certs", "--out", str(out), "--server", "cic1", "--backup", "cic2",
          "--dns", "cic.example.com", "--bridge", "sm1", "--new-ca"])  # fmt: skip
    printed = capsys.readouterr().out.split()
    assert len(printed) == 9
    ca = _cert(out / "ca.pem")
    for name in ("cic1", "cic2", "sm1-client"):
        assert stat.S_IMODE((out / f"{name}.key").stat().st_mode) == 0o600
        csr = x509.load_pem_x509_csr((out / f"{name}.csr").read_bytes())
        assert csr.is_signature_valid
        cert = _cert(out / f"{name}.pem")
        cert.verify_directly_issued_by(ca)
        assert csr.public_key() == cert.public_key()
    sans = _cert(out / "cic2.pem").extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sans.value.get_values_for_type(x509.DNSName) == ["cic2", "cic.example.com"]
    eku = _cert(out / "sm1-client.pem").extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    options = pki.server_options(out / "cic1.pem", out / "ca.pem")
    assert options is not None


def test_csr_only_without_a_ca_and_no_overwrite(tmp_path: Path) -> None:
    """Without a CA only key and CSR are written; a second run refuses to overwrite them."""
    main(["certs", "--out", str(tmp_path), "--server", "cic1"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cic1.csr", "cic1.key"]
    with pytest.raises(SystemExit):
        main(["certs", "--out", str(tmp_path), "--server", "cic1"])


class ImportedAuthority(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def _start(self, import_ca: bool) -> Any:
        """Start a Notifier (with --import-ca or not) and a bridge certified by a custom CA."""
        from twisted.internet import reactor

        work = Path(tempfile.mkdtemp(prefix="smbridge-ca-"))
        files = pki.ensure_site_pki(work / "pki")
        main(["certs", "--out", str(work / "custom"), "--server", "unused", "--bridge", "sm1",
              "--new-ca"])  # fmt: skip
        custom = work / "custom"
        args = ["--demo", "--port", "0", "--interface", "127.0.0.1", "--control", "none",
                "--http-port", "off", "--https-port", "off", "--cert", str(files.notifier),
                "--ca", str(files.ca), "--trust", str(custom / "sm1-client.pem"),
                "--work-path", str(work)]  # fmt: skip
        if import_ca:
            args += ["--import-ca", str(custom / "ca.pem")]
        options = Options()
        options.parseOptions(args)
        notifier = make_notifier_service(options.config, reactor)
        notifier.startService()
        self.addCleanup(notifier.stopService)
        yield notifier.when_listening()
        port: Any = notifier.link_port
        config = BridgeConfig(
            identity=BridgeIdentity("sm1", "localhost"),
            tls=TLSFiles(files.bridge, custom / "sm1-client.pem", files.ca),
            notifiers=(NotifierAddress("127.0.0.1", port.getHost().port),),
            notifier_name="localhost",
            port=0,
            interface="127.0.0.1",
        )
        bridge = BridgeService(config, reactor)
        bridge.startService()
        self.addCleanup(bridge.stopService)
        return bridge

    @defer.inlineCallbacks
    def test_imported_authority_lets_its_bridge_in(self) -> Any:
        """With --import-ca, a bridge certificate from that custom CA registers."""
        bridge = yield self._start(import_ca=True)
        yield poll(lambda: bridge.upstream.up, deadline=20)
        self.assertEqual(bridge.upstream.state.value, "up")

    @defer.inlineCallbacks
    def test_without_the_import_the_handshake_fails(self) -> Any:
        """Without it, the same bridge never gets the link (the TLS handshake fails)."""
        bridge = yield self._start(import_ca=False)
        yield poll(lambda: bridge.upstream.last_error is not None, deadline=20)
        self.assertFalse(bridge.upstream.up)
