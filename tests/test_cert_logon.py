"""Certificate logon's parts without sockets: the verdict, the site mapping, the options."""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.python import usage

from smbridge import pki
from smbridge.errors import LogonFailed
from smbridge.notifier.auth import Authenticator
from smbridge.notifier.site import Site
from smbridge.notifier.site_certs import canonical_fingerprint, canonical_subject
from smbridge.notifier.site_types import SiteError
from smbridge.options import Options
from smbridge.router.cert_logon import certificate_request
from smbridge.testing.client_certs import CertPKI, cert_site_dict, make_cert_pki
from smbridge.transports.client_certs import (
    ClientCertificates,
    ForwardedCertificate,
    ProxyHeaders,
    judge,
)
from smbridge.tunnel.nginx import TEMPLATE, Backend, ProxySite, render

NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPKI:
    return make_cert_pki(tmp_path_factory.mktemp("pki"))


def verdict(certs: CertPKI, name: str | None, crl: bool = True) -> str | None:
    checker = ClientCertificates(certs.ca, certs.crl if crl else None)
    cert = certs.clients[name].certificate if name else None
    return checker.check(cert, NOW).reason


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("agent1", None),
        ("stranger", None),  # a good certificate: whether a user maps is the Notifier's say
        ("expired", "certificate-expired"),
        ("revoked", "certificate-revoked"),
        ("foreign", "certificate-untrusted"),
        (None, "no-certificate"),
    ],
)
def test_verdicts(certs: CertPKI, name: str | None, reason: str | None) -> None:
    """Each kind of certificate gets its reason (None: good)."""
    assert verdict(certs, name) == reason


def test_revocation_needs_the_crl(certs: CertPKI) -> None:
    """Without a CRL file the revoked certificate is good; the CRL is what revokes it."""
    assert verdict(certs, "revoked", crl=False) is None


def test_server_only_certificate_is_untrusted(certs: CertPKI) -> None:
    """A certificate whose usages leave out client authentication cannot log on."""
    ca_key, ca_cert = pki.load_site_ca(certs.directory)
    _, server_cert = pki.issue(ca_key, ca_cert, "agent1", client=False, server=True)
    check = ClientCertificates(certs.ca).check(server_cert, NOW)
    assert (check.reason, check.detail) == (
        "certificate-untrusted",
        "not for client authentication",
    )


def test_crl_is_reread_when_the_file_changes(certs: CertPKI, tmp_path: Path) -> None:
    """A new CRL file takes effect at the next check, without a restart."""
    crl = tmp_path / "crl.pem"
    crl.write_bytes(pki.write_crl(certs.directory, [], out=tmp_path).read_bytes())
    checker = ClientCertificates(certs.ca, crl)
    agent1 = certs.clients["agent1"].certificate
    assert checker.check(agent1, NOW).reason is None
    pki.write_crl(certs.directory, [agent1], out=tmp_path)
    stat = crl.stat()
    os.utime(crl, (stat.st_atime, stat.st_mtime + 5))  # a different mtime, whatever the clock
    assert checker.check(agent1, NOW).reason == "certificate-revoked"
    assert checker.crl_loads == 2
    crl.write_text("garbage")  # a bad file keeps the last good list, and says so
    os.utime(crl, (stat.st_atime, stat.st_mtime + 10))
    assert checker.check(agent1, NOW).reason == "certificate-revoked"


def test_identity_fields(certs: CertPKI) -> None:
    """The identity names subject, SHA-256 fingerprint, issuer and expiry."""
    check = ClientCertificates(certs.ca).check(certs.clients["agent2"].certificate, NOW)
    assert check.identity is not None
    assert check.identity.to_wire() == {
        "subject": "CN=agent2,O=smbridge",
        "fingerprint": certs.fingerprint("agent2"),
        "issuer": "CN=smbridge private CA,O=smbridge",
        "notAfter": certs.clients["agent2"].certificate.not_valid_after_utc.isoformat(),
    }


class FakeConnection:
    def __init__(self, forwarded: ForwardedCertificate | None = None) -> None:
        self.forwarded_certificate = forwarded
        self.transport = None


def test_forwarded_header_is_judged_like_tls(certs: CertPKI) -> None:
    """A trusted proxy's header certificate is checked by the bridge's own CA and CRL."""
    from urllib.parse import quote

    checker = ClientCertificates(certs.ca, certs.crl)
    for name, reason in (("agent1", None), ("revoked", "certificate-revoked")):
        pem = pki.cert_pem(certs.clients[name].certificate).decode()
        check = judge(FakeConnection(ForwardedCertificate(quote(pem), "SUCCESS")), checker, NOW)
        assert check.reason == reason
        assert check.identity is not None and check.identity.via == "proxy"
    assert judge(FakeConnection(ForwardedCertificate("", "NONE")), checker, NOW).reason == (
        "no-certificate"
    )
    bad = judge(FakeConnection(ForwardedCertificate("not%20a%20pem", "SUCCESS")), checker, NOW)
    assert bad.reason == "certificate-untrusted"


def test_certificate_request_refuses_with_reason(certs: CertPKI) -> None:
    """The bridge refuses bad certificates before the Notifier hears of them, with a log line."""
    from urllib.parse import quote

    with pytest.raises(LogonFailed) as raised:
        certificate_request(FakeConnection(), ClientCertificates(certs.ca), Clock(), None, None)
    assert raised.value.extra == {"reason": "no-certificate"}
    pem = quote(pki.cert_pem(certs.clients["expired"].certificate).decode())
    clock = Clock()
    clock.advance(NOW.timestamp())
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    try:
        with pytest.raises(LogonFailed) as raised:
            conn = FakeConnection(ForwardedCertificate(pem, "SUCCESS"))
            certificate_request(conn, ClientCertificates(certs.ca), clock, None, None)
    finally:
        globalLogPublisher.removeObserver(observer)
    assert raised.value.extra == {"reason": "certificate-expired"}
    [event] = [e for e in observer if e.get("event") == "session.certificate_refused"]
    assert (event["detail"], event["subject"]) == (
        "outside its validity period",
        "CN=agent1,O=smbridge",
    )
    request, identity = certificate_request(
        FakeConnection(
            ForwardedCertificate(
                quote(pki.cert_pem(certs.clients["agent1"].certificate).decode()), "SUCCESS"
            )
        ),
        ClientCertificates(certs.ca),
        clock,
        "agent1",
        "7001",
    )
    assert request == {"certificate": identity.to_wire(), "station": "7001", "user": "agent1"}


def test_proxy_headers_only_from_trusted_proxies() -> None:
    """Headers count from a trusted proxy; from anyone else they are ignored and logged once."""
    headers = ProxyHeaders([ipaddress.ip_network("10.0.0.0/24")])
    sent = {"x-ssl-client-cert": "PEM", "x-ssl-client-verify": "SUCCESS"}
    assert headers.take(sent, "10.0.0.7") == ForwardedCertificate("PEM", "SUCCESS")
    assert headers.take({}, "10.0.0.7") == ForwardedCertificate("", "")  # never the hop's TLS
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    try:
        assert headers.take(sent, "192.0.2.1") is None
        assert headers.take(sent, "192.0.2.2") is None
    finally:
        globalLogPublisher.removeObserver(observer)
    logged = [e for e in observer if e.get("event") == "client_certs.untrusted_header"]
    assert len(logged) == 1 and headers.ignored == 2


# --- the Notifier's side ------------------------------------------------------------------
@pytest.fixture(scope="module")
def auth(certs: CertPKI) -> Authenticator:
    return Authenticator(Site.from_dict(cert_site_dict(certs)))


def identity(certs: CertPKI, name: str) -> dict[str, Any]:
    check = ClientCertificates(certs.ca).check(certs.clients[name].certificate, NOW)
    assert check.identity is not None
    return check.identity.to_wire()


def test_mapping_by_subject_and_fingerprint(auth: Authenticator, certs: CertPKI) -> None:
    """agent1 maps by subject, agent2 by fingerprint; the answer is a password logon's."""
    assert auth.authenticate_certificate(identity(certs, "agent1"))["user"]["id"] == "agent1"
    answer = auth.authenticate_certificate(identity(certs, "agent2"), user="agent2")
    assert answer == auth._answer(auth.site.users["agent2"], None)


def test_unknown_certificates(auth: Authenticator, certs: CertPKI) -> None:
    """No mapping, or a named user the certificate is not for: certificate-unknown."""
    for name, user in (("stranger", None), ("agent1", "agent2")):
        with pytest.raises(LogonFailed) as raised:
            auth.authenticate_certificate(identity(certs, name), user=user)
        assert raised.value.extra == {"reason": "certificate-unknown"}


def test_fingerprint_entry_needs_that_very_certificate(auth: Authenticator, certs: CertPKI) -> None:
    """Another certificate with agent2's subject does not log agent2 on (fingerprint-mapped)."""
    other = pki.issue_client(certs.directory, "agent2", certs.directory / "other")
    check = ClientCertificates(certs.ca).check(other.certificate, NOW)
    assert check.identity is not None
    with pytest.raises(LogonFailed):
        auth.authenticate_certificate(check.identity.to_wire())


def test_require_certificate_refuses_passwords(auth: Authenticator) -> None:
    """A requireCertificate user cannot log on with a (right) password; others can."""
    with pytest.raises(LogonFailed) as raised:
        auth.authenticate("agent2", "demo")
    assert raised.value.extra == {"reason": "certificate-required"}
    assert auth.authenticate("agent1", "demo")["user"]["id"] == "agent1"


def test_site_file_fields_are_checked(certs: CertPKI) -> None:
    """Bad certificate entries are refused with the field named."""
    for entry, message in (
        ({"certificate": {"subject": "not a name"}}, "users[0].certificate.subject"),
        ({"certificate": {"fingerprint": "sha256:abc"}}, "users[0].certificate.fingerprint"),
        ({"certificate": {"serial": "1"}}, "users[0].certificate"),
        ({"requireCertificate": "yes"}, "users[0].requireCertificate"),
        ({"requireCertificate": True}, "no certificate entry"),
    ):
        data = cert_site_dict(certs)
        user = data["users"][0]
        user.pop("certificate", None)
        user.update(entry)
        with pytest.raises(SiteError, match=message.replace("[", r"\[").replace("]", r"\]")):
            Site.from_dict(data)


def test_canonical_forms() -> None:
    """Subjects and fingerprints compare in one canonical form."""
    assert canonical_subject("CN=agent1, O=Example") == "CN=agent1,O=Example"
    hexed = "AB" * 32
    assert canonical_fingerprint(":".join(["AB"] * 32)) == f"sha256:{hexed.lower()}"
    assert canonical_fingerprint(f"SHA256:{hexed}") == f"sha256:{hexed.lower()}"


# --- options and the nginx site -------------------------------------------------------------
def test_options(certs: CertPKI, tmp_path: Path) -> None:
    """--client-ca, --client-crl and --trusted-proxy reach the configuration."""
    (tmp_path / "pki").symlink_to(certs.directory)
    options = Options()
    options.parseOptions(
        [
            "--work-path",
            str(tmp_path),
            "--client-ca",
            str(certs.ca),
            "--client-crl",
            str(certs.crl),
            "--trusted-proxy",
            "127.0.0.1",
            "--trusted-proxy",
            "10.1.0.0/16",
        ]
    )
    config = options.config
    assert config is not None
    assert (config.client_ca, config.client_crl) == (certs.ca.resolve(), certs.crl.resolve())
    assert [str(n) for n in config.tunnel.trusted_proxies] == ["127.0.0.1/32", "10.1.0.0/16"]
    for argv, message in (
        (["--client-crl", str(certs.crl)], "--client-crl needs --client-ca"),
        (["--client-ca", str(tmp_path / "missing.pem")], "--client-ca: no such file"),
        (["--trusted-proxy", "proxy.example"], "--trusted-proxy"),
        (["--client-ca", str(certs.crl)], "--client-ca: .*: "),
        (["--client-ca", str(certs.ca), "--client-crl", str(certs.ca)], "--client-crl: .*: "),
    ):
        with pytest.raises(usage.UsageError, match=message):
            Options().parseOptions(["--work-path", str(tmp_path), *argv])


def test_nginx_site_without_and_with_client_ca() -> None:
    """Without a client CA nothing is asked for; the headers are set by nginx either way."""
    site = ProxySite("c.pem", "c.key", "ca.pem", (Backend("edge1", "10.0.0.1", "sm1"),))
    plain = render(TEMPLATE.read_text(), site)
    assert "ssl_verify_client" not in plain
    assert plain.count("proxy_set_header X-SSL-Client-Verify $ssl_client_verify;") == 3
    with_ca = render(
        TEMPLATE.read_text(),
        ProxySite(
            "c.pem", "c.key", "ca.pem", site.backends, client_ca="/etc/ca.pem", client_crl="/crl"
        ),
    )
    for line in (
        "ssl_client_certificate /etc/ca.pem;",
        "ssl_verify_client optional;",
        "ssl_crl /crl;",
    ):
        assert line in with_ca
    with pytest.raises(ValueError, match="client CA path"):
        render(TEMPLATE.read_text(), ProxySite("c", "k", "ca", site.backends, client_ca="a b"))


def test_certs_command_issues_client_certificates_and_a_crl(tmp_path: Path) -> None:
    """``smbridge certs --client`` issues a usable client certificate; ``--revoke`` a CRL."""
    from cryptography import x509

    from smbridge.cli import main

    main(["certs", "--out", str(tmp_path), "--new-ca", "--client", "agent1"])
    cert_path = tmp_path / "client-agent1.pem"
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert ClientCertificates(tmp_path / "ca.pem").check(cert, NOW).reason is None
    assert oct((tmp_path / "client-agent1.key").stat().st_mode & 0o777) == "0o600"
    pki.load_identity(cert_path, tmp_path / "client-agent1.key")  # a usable client identity
    main(["certs", "--out", str(tmp_path), "--ca-dir", str(tmp_path), "--revoke", str(cert_path)])
    checker = ClientCertificates(tmp_path / "ca.pem", tmp_path / "crl.pem")
    assert checker.check(cert, NOW).reason == "certificate-revoked"
    with pytest.raises(SystemExit):  # never overwritten
        main(["certs", "--out", str(tmp_path), "--ca-dir", str(tmp_path), "--client", "agent1"])


def test_certificates_are_asked_for_only_with_a_client_ca(certs: CertPKI) -> None:
    """Without --client-ca the TLS server asks for no certificate; with it, optionally."""
    from OpenSSL import SSL

    plain = pki.server_tickets(certs.directory / "bridge.pem", Clock(), 0).current()
    assert plain.get_verify_mode() == SSL.VERIFY_NONE
    checker = ClientCertificates(certs.ca)
    asking = pki.server_tickets(certs.directory / "bridge.pem", Clock(), 3600, checker.configure)
    context = asking.current()
    assert context.get_verify_mode() == SSL.VERIFY_PEER  # not FAIL_IF_NO_PEER_CERT
