"""Client certificates on the client port and wss (Glacier2's SSL session manager).

With a client CA configured (``--client-ca``), the TLS servers of the client port
and of wss ask every client for a certificate, but never fail the handshake over
it: a client without one still connects and logs on with a password. Whether a
certificate is good is decided later, at ``CreateSession {auth: "certificate"}``,
by :meth:`ClientCertificates.check`: it must chain to a client CA (through the
intermediates the client sent; transports/cert_chain.py), every certificate of
the chain be inside its validity period and not revoked, and the leaf allow client
authentication (when it names its usages). Revocations come from the CRL file
(``--client-crl``, re-read when the file changes). The outcome is a reason the
client gets with ``logon-failed``: ``no-certificate``, ``certificate-untrusted``,
``certificate-expired``, ``certificate-revoked``; a good certificate gives the session a
:class:`~smbridge.session.certificate.CertificateIdentity`.

Behind nginx the proxy ends TLS, so the certificate arrives in headers the proxy
always sets itself (``X-SSL-Client-Cert``: the URL-escaped PEM, and
``X-SSL-Client-Verify``). They are believed only on connections from a trusted
proxy address (``--trusted-proxy``; :func:`forwarded_from`); the bridge checks the
certificate itself all the same.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID
from OpenSSL import SSL, crypto
from twisted.logger import Logger

from smbridge.session.certificate import CertificateIdentity
from smbridge.transports.cert_chain import EXPIRED as EXPIRED  # the reasons, as before
from smbridge.transports.cert_chain import REVOKED as REVOKED
from smbridge.transports.cert_chain import UNTRUSTED as UNTRUSTED
from smbridge.transports.cert_chain import ChainMemory, peer_chain, revoked_in, verify_chain

NO_CERTIFICATE = "no-certificate"
CERT_HEADER = "x-ssl-client-cert"
VERIFY_HEADER = "x-ssl-client-verify"
MAX_HEADER_CERT = 16384  # bytes of escaped PEM taken from the proxy's header

Network = IPv4Network | IPv6Network


@dataclass(frozen=True)
class CertificateCheck:
    """The verdict on a presented certificate: ``reason`` None means good."""

    reason: str | None
    identity: CertificateIdentity | None = None
    detail: str = ""  # for the log line: what exactly was wrong


@dataclass(frozen=True)
class ForwardedCertificate:
    """What a trusted proxy said about its client's certificate (the raw header values)."""

    escaped_pem: str  # "" when the client sent none
    verify: str  # nginx's $ssl_client_verify: SUCCESS, FAILED:reason or NONE


def _accept_any(connection: Any, cert: Any, errno: int, depth: int, ok: int) -> bool:
    return True  # the handshake never fails over a client certificate: check() decides


def identity_of(cert: x509.Certificate, via: str = "tls") -> CertificateIdentity:
    """The session's view of ``cert``: subject, SHA-256 fingerprint, issuer, expiry."""
    digest = cert.fingerprint(hashes.SHA256()).hex()
    return CertificateIdentity(
        subject=cert.subject.rfc4514_string(),
        fingerprint=f"sha256:{digest}",
        issuer=cert.issuer.rfc4514_string(),
        not_after=cert.not_valid_after_utc.isoformat(),
        serial=format(cert.serial_number, "x"),
        via=via,
    )


class ClientCertificates:
    """The client CA(s) and CRL: asks for certificates in TLS, and judges them."""

    log = Logger()

    def __init__(self, ca: Path, crl: Path | None = None) -> None:
        self.ca_path = ca
        self.crl_path = crl
        self.authorities = x509.load_pem_x509_certificates(ca.read_bytes())
        if not self.authorities:
            raise ValueError(f"{ca}: no certificate in the file")
        self._crls: list[x509.CertificateRevocationList] = []
        self._crl_stamp: tuple[float, int] | None = None
        self.crl_loads = 0
        self.chains = ChainMemory()  # for TLS sessions resumed without their chain
        self._load_crl()

    # --- TLS ---------------------------------------------------------------------------
    def configure(self, context: SSL.Context) -> None:
        """Ask clients for a certificate (from these CAs) without requiring or verifying it."""
        context.set_verify(SSL.VERIFY_PEER, _accept_any)
        for ca in self.authorities:  # the names clients choose their certificate by
            context.add_client_ca(crypto.X509.from_cryptography(ca))

    # --- the CRL -----------------------------------------------------------------------
    def _load_crl(self) -> None:
        """(Re-)read the CRL file when it changed; a bad file keeps the previous list."""
        path = self.crl_path
        if path is None:
            return
        try:
            st = os.stat(path)
        except OSError as e:
            if self._crl_stamp is None:
                raise ValueError(f"{path}: {e.strerror}") from None
            self.log.warn(
                "Client CRL {path} unreadable ({error}); the last one read stays in force",
                path=str(path),
                error=e.strerror,
                event="client_certs.crl_unreadable",
            )
            return
        stamp = (st.st_mtime, st.st_size)
        if stamp == self._crl_stamp:
            return
        try:
            crls = _parse_crls(path.read_bytes())
        except ValueError as e:
            if self._crl_stamp is None:
                raise ValueError(f"{path}: {e}") from None
            self.log.warn(
                "Client CRL {path} not loaded ({error}); the last one read stays in force",
                path=str(path),
                error=str(e),
                event="client_certs.crl_bad",
            )
            return
        self._crls = crls
        self._crl_stamp = stamp
        self.crl_loads += 1
        self.log.info(
            "Client CRL {path} loaded: {revoked} revoked certificate(s)",
            path=str(path),
            revoked=sum(len(c) for c in crls),
            event="client_certs.crl_loaded",
        )

    # --- the verdict -------------------------------------------------------------------
    def check(
        self,
        cert: x509.Certificate | None,
        now: datetime.datetime,
        via: str = "tls",
        chain: Sequence[x509.Certificate] = (),
    ) -> CertificateCheck:
        """Judge ``cert`` (sent with the intermediates ``chain``) at ``now``.

        The path to a client CA is verified by OpenSSL (transports/cert_chain.py); the
        reason names the first problem found.
        """
        if cert is None:
            return CertificateCheck(NO_CERTIFICATE, None, "no client certificate presented")
        identity = identity_of(cert, via)
        path = verify_chain(self.authorities, cert, chain, now)
        if path.reason == UNTRUSTED:
            return CertificateCheck(UNTRUSTED, identity, path.detail)
        if not _usable_for_clients(cert):
            return CertificateCheck(UNTRUSTED, identity, "not for client authentication")
        if path.reason is not None:
            return CertificateCheck(path.reason, identity, path.detail)
        self._load_crl()
        revoked = revoked_in(path.chain, self._crls)
        if revoked:
            return CertificateCheck(REVOKED, identity, revoked)
        if chain:
            self.chains.remember(cert, chain)
        return CertificateCheck(None, identity)


def _parse_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    crls = []
    marker = b"-----BEGIN X509 CRL-----"
    for part in data.split(marker)[1:]:
        crls.append(x509.load_pem_x509_crl(marker + part))
    if not crls and data.strip():
        raise ValueError("no PEM CRL in the file")
    return crls


def _usable_for_clients(cert: x509.Certificate) -> bool:
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return ExtendedKeyUsageOID.CLIENT_AUTH in usages


# --- where a connection's certificate comes from ------------------------------------------
def trusted(host: str, proxies: Iterable[Network]) -> bool:
    """Whether ``host`` (an IP address text) is in one of the trusted proxy networks."""
    try:
        address = ip_address(host.strip("[]"))
    except ValueError:
        return False
    return any(address in network for network in proxies)


def forwarded_from(headers: Mapping[str, str]) -> ForwardedCertificate | None:
    """The proxy's certificate headers, or None when the request carries neither."""
    pem = headers.get(CERT_HEADER)
    verify = headers.get(VERIFY_HEADER)
    if pem is None and verify is None:
        return None
    return ForwardedCertificate((pem or "").strip(), (verify or "").strip()[:128])


def parse_forwarded(forwarded: ForwardedCertificate) -> x509.Certificate | None:
    """The certificate in a proxy's header; None when there is none; ValueError when bad."""
    escaped = forwarded.escaped_pem
    if not escaped:
        return None
    if len(escaped) > MAX_HEADER_CERT:
        raise ValueError("the certificate header is too large")
    return x509.load_pem_x509_certificate(unquote(escaped).encode("ascii", "replace"))


def presented(conn: Any) -> tuple[x509.Certificate | None, str, str]:
    """The certificate ``conn``'s client presented, how it came, and a parse problem.

    A connection from a trusted proxy that sent the certificate headers carries
    them (``forwarded_certificate``) and they are the whole truth (the hop's own TLS
    says nothing about the client); any other connection has its own TLS handshake.
    """
    forwarded: ForwardedCertificate | None = getattr(conn, "forwarded_certificate", None)
    if forwarded is not None:
        try:
            return parse_forwarded(forwarded), "proxy", ""
        except ValueError as e:
            return None, "proxy", str(e) or "unreadable certificate header"
    transport = getattr(conn, "transport", None)
    get = getattr(transport, "getPeerCertificate", None)
    if get is None:
        return None, "tls", ""
    peer = get()
    if peer is None:
        return None, "tls", ""
    return peer.to_cryptography(), "tls", ""


def judge(
    conn: Any, certificates: ClientCertificates | None, now: datetime.datetime
) -> CertificateCheck:
    """The verdict on ``conn``'s client certificate (untrusted when no client CA is set)."""
    cert, via, problem = presented(conn)
    if problem:
        return CertificateCheck(UNTRUSTED, None, problem)
    if certificates is None:
        if cert is None:
            return CertificateCheck(NO_CERTIFICATE, None, "no client certificate presented")
        return CertificateCheck(UNTRUSTED, identity_of(cert, via), "no client CA configured")
    chain = peer_chain(conn, certificates.chains) if via == "tls" else ()
    return certificates.check(cert, now, via, chain)


class ProxyHeaders:
    """Which connections' certificate headers are believed: those from trusted proxies.

    From anyone else the headers are ignored (the connection's own TLS counts) and
    logged once per process, then only counted (``ignored``). From a trusted proxy
    the headers are the whole truth, sent or not.
    """

    log = Logger()

    def __init__(self, proxies: Iterable[Network] = ()) -> None:
        self.proxies = tuple(proxies)
        self.ignored = 0

    def take(self, headers: Mapping[str, str], peer_host: str) -> ForwardedCertificate | None:
        """What a connection from ``peer_host`` may claim: None means its own TLS.

        From a trusted proxy only its headers count (none sent: no certificate), never
        the hop's own TLS, whose certificate, if any, is the proxy's and not the client's.
        """
        forwarded = forwarded_from(headers)
        if trusted(peer_host, self.proxies):
            return forwarded or ForwardedCertificate("", "")
        if forwarded is None:
            return None
        self.ignored += 1
        if self.ignored == 1:
            self.log.warn(
                "Client-certificate headers from {peer}, which is not a trusted proxy "
                "(--trusted-proxy), ignored; later ones are only counted",
                peer=peer_host[:64],
                event="client_certs.untrusted_header",
            )
        return None


def readable(path: Path, crl: bool = False) -> str:
    """What is wrong with a client CA (or, ``crl``, CRL) PEM file; "" when it reads."""
    try:
        data = path.read_bytes()
        if crl:
            _parse_crls(data)
        elif not x509.load_pem_x509_certificates(data):
            return "no certificate in the file"
    except OSError as e:
        return str(e.strerror)
    except ValueError as e:
        return str(e) or "not PEM"
    return ""
