"""Certificates: a private CA and the leaf certificates a site needs.

ECDSA P-256 throughout: handshakes are about 1.5x cheaper than RSA-2048, which
matters when thousands of clients reconnect at once. Files are PEM; a leaf file
holds the key then the certificate, readable by ``PrivateCertificate.loadPEM``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IReactorTime

if TYPE_CHECKING:
    from smbridge.transports.resumption import TicketKeys

Key = ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smbridge"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(
    common_name: str = "smbridge private CA", days: int = 3650, path_length: int | None = 0
) -> tuple[Key, x509.Certificate]:
    """Create a self-signed certificate authority (``path_length`` 0: no intermediates)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _signed_by(
    ca_cert: x509.Certificate, common_name: str, key: Key, now: datetime.datetime, days: int
) -> x509.CertificateBuilder:
    """A certificate for ``key`` named ``common_name``, issued by ``ca_cert``, valid from
    five minutes before ``now`` for ``days``: what every issued certificate starts from."""
    return (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def issue_intermediate(
    ca_key: Key,
    ca_cert: x509.Certificate,
    common_name: str,
    days: int = 1825,
    not_before: datetime.datetime | None = None,
) -> tuple[Key, x509.Certificate]:
    """An intermediate CA signed by ``ca_cert`` (which needs a path length above 0).

    It issues leaf certificates only (path length 0); ``not_before`` as in :func:`issue`.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = not_before or _now()
    cert = (
        _signed_by(ca_cert, common_name, key, now, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def issue(
    ca_key: Key,
    ca_cert: x509.Certificate,
    common_name: str,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    client: bool = False,
    server: bool = True,
    days: int = 365,  # Mozilla's profiles want leaf certificates to live under 366 days
    not_before: datetime.datetime | None = None,
) -> tuple[Key, x509.Certificate]:
    """Issue a leaf certificate signed by the CA, for TLS server and/or client use.

    ``not_before`` (default: now) lets tests and demos mint an already expired one.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = not_before or _now()
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    builder = (
        _signed_by(ca_cert, common_name, key, now, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private(path: Path, data: bytes) -> None:
    """Write a file that holds a private key: created 0600, replaced atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


@dataclass(frozen=True)
class SitePKI:
    """Paths of the PEM files of a development or demo site."""

    ca: Path  # CA certificate (trust root for clients, bridges and the Notifier)
    bridge: Path  # bridge server certificate + key (client listener)
    bridge_client: Path  # bridge client certificate + key (toward the Notifier)
    notifier: Path  # Notifier server certificate + key

    @classmethod
    def in_dir(cls, directory: Path) -> SitePKI:
        return cls(
            directory / "ca.pem",
            directory / "bridge.pem",
            directory / "bridge-client.pem",
            directory / "notifier.pem",
        )

    def exists(self) -> bool:
        return all(p.exists() for p in (self.ca, self.bridge, self.bridge_client, self.notifier))


def ensure_site_pki(
    directory: Path,
    bridge_names: tuple[str, ...] = ("localhost",),
    notifier_names: tuple[str, ...] = ("localhost",),
) -> SitePKI:
    """Create the CA and the three leaf certificates under ``directory`` unless present.

    The CA key is written beside them (``ca.key``) so that more certificates can be
    issued later; every key file is mode 0600.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pki = SitePKI.in_dir(directory)
    if pki.exists():
        return pki
    ca_key, ca_cert = make_ca()
    write_private(directory / "ca.key", key_pem(ca_key))
    pki.ca.write_bytes(cert_pem(ca_cert))
    loopback = ("127.0.0.1", "::1")
    for path, names, client, server in (
        (pki.bridge, bridge_names, False, True),
        (pki.bridge_client, bridge_names, True, False),
        (pki.notifier, notifier_names, False, True),
    ):
        key, cert = issue(ca_key, ca_cert, names[0], names, loopback, client=client, server=server)
        write_private(path, key_pem(key) + cert_pem(cert))
    return pki


def load_ca(path: Path) -> ssl.Certificate:
    return ssl.Certificate.loadPEM(path.read_bytes())


def load_private(path: Path) -> ssl.PrivateCertificate:
    private: ssl.PrivateCertificate = ssl.PrivateCertificate.loadPEM(path.read_bytes())
    return private


# Mozilla's "intermediate" server configuration (v5.7): TLS 1.2 with these AEAD
# suites, and TLS 1.3 (whose suites OpenSSL picks, all acceptable). Older protocol
# versions are refused by Twisted's defaults (TLS 1.2 minimum).
MOZILLA_INTERMEDIATE_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    ]
)


def server_options(
    identity: Path,
    client_ca: Path | None = None,
    imported_cas: Sequence[Path] = (),
    session_tickets: bool = False,
) -> ssl.CertificateOptions:
    """TLS server options; with ``client_ca``, clients must present a certificate it signed
    (or one signed by an ``imported_cas`` authority: a site's own, custom CA).

    Idle connections give their OpenSSL buffers back (``SSL_MODE_RELEASE_BUFFERS``):
    a bridge holds thousands of mostly idle sessions, and the buffers are about
    half of each one's memory. ``session_tickets`` offers TLS session resumption
    (whose keys :class:`smbridge.transports.resumption.TicketKeys` rotates).
    """
    authorities = []
    if client_ca is not None:
        authorities = [load_ca(client_ca), *[load_ca(p) for p in imported_cas]]
    return _server_options(load_private(identity), authorities, session_tickets)


def _server_options(
    private: ssl.PrivateCertificate, authorities: list[ssl.Certificate], session_tickets: bool
) -> ssl.CertificateOptions:
    trust = ssl.trustRootFromCertificates(authorities) if authorities else None
    options = ssl.CertificateOptions(
        privateKey=private.privateKey.original,
        certificate=private.original,
        trustRoot=trust,
        enableSessionTickets=session_tickets,
    )
    context = options.getContext()
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    context.set_cipher_list(MOZILLA_INTERMEDIATE_CIPHERS.encode("ascii"))
    _restrict_groups(context)
    return options


def server_tickets(
    identity: Path,
    clock: IReactorTime,
    rotation: float,
    configure: Callable[[SSL.Context], None] | None = None,
) -> TicketKeys:
    """The client port's and the wss port's TLS: one certificate, shared rotating ticket keys.

    The identity is read now; each key generation is a fresh context built from it.
    ``rotation`` 0: no session resumption. ``configure`` adjusts each new context
    (the client certificate request, transports/client_certs.py).
    """
    from smbridge.transports.resumption import TicketKeys

    private = load_private(identity)

    def build(tickets: bool) -> SSL.Context:
        context = _server_options(private, [], tickets).getContext()
        if configure is not None:
            context.set_session_id(b"smbridge-clients")  # resumption with a peer certificate
            configure(context)
        return context

    return TicketKeys(build, clock, rotation)


MOZILLA_INTERMEDIATE_GROUPS = b"X25519:prime256v1:secp384r1"


def _restrict_groups(context: SSL.Context) -> None:
    """Offer only Mozilla "intermediate"'s key-exchange groups (not X448 or P-521).

    pyOpenSSL has no public call for the groups list, so this uses its OpenSSL
    binding; where that is missing the library's defaults stay.
    """
    from OpenSSL.SSL import _lib  # type: ignore[attr-defined]

    setter = getattr(_lib, "SSL_CTX_set1_curves_list", None)
    if setter is not None and not setter(context._context, MOZILLA_INTERMEDIATE_GROUPS):
        raise ValueError("OpenSSL refused the key-exchange groups list")


def client_options(
    hostname: str,
    ca: Path | None,
    identity: Path | None = None,
    key: Path | None = None,
) -> IOpenSSLClientConnectionCreator:
    """TLS client options that verify the server's certificate and name (service-identity).

    ``ca`` None: the platform's trust store. ``identity``: a client certificate to
    present (with its key in the same file, or in ``key``); further certificates in
    its file (intermediate CAs) are sent with it as its chain.
    """
    chain = x509.load_pem_x509_certificates(identity.read_bytes())[1:] if identity else []
    extra = [crypto.X509.from_cryptography(c) for c in chain]
    return ssl.optionsForClientTLS(
        hostname,
        trustRoot=load_ca(ca) if ca is not None else None,
        clientCertificate=load_identity(identity, key) if identity is not None else None,
        extraCertificateOptions={"extraCertChain": extra} if extra else None,
    )


# --- client certificates (certificate logon, docs/client.md) ------------------------------
@dataclass(frozen=True)
class ClientCertificate:
    """A client's certificate and key files, and the certificate itself."""

    cert: Path
    key: Path
    certificate: x509.Certificate


def load_site_ca(directory: Path) -> tuple[Key, x509.Certificate]:
    """The CA key and certificate that :func:`ensure_site_pki` wrote under ``directory``."""
    key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{directory / 'ca.key'}: not an EC private key")
    return key, x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())


def issue_client(
    directory: Path,
    name: str,
    out: Path | None = None,
    expired: bool = False,
    days: int = 365,
) -> ClientCertificate:
    """Issue a client certificate (CN=``name``) from the site CA under ``directory``.

    Written to ``out`` (default ``directory``) as ``client-<name>.pem`` and
    ``client-<name>.key`` (0600); ``expired`` mints one whose validity ended yesterday.
    """
    ca_key, ca_cert = load_site_ca(directory)
    start = _now() - datetime.timedelta(days=days + 1) if expired else None
    key, cert = issue(ca_key, ca_cert, name, client=True, server=False, days=days, not_before=start)
    target = out or directory
    target.mkdir(parents=True, exist_ok=True)
    files = ClientCertificate(target / f"client-{name}.pem", target / f"client-{name}.key", cert)
    files.cert.write_bytes(cert_pem(cert))
    write_private(files.key, key_pem(key))
    return files


def build_crl(
    issuer_key: Any,
    issuer_cert: x509.Certificate,
    revoked: Sequence[x509.Certificate],
    now: datetime.datetime | None = None,
    days: int = 30,
) -> x509.CertificateRevocationList:
    """A CRL signed by ``issuer`` revoking ``revoked`` (as of a minute before ``now``)."""
    now = now or _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_cert.subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + datetime.timedelta(days=days))
    )
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(now - datetime.timedelta(minutes=1))
            .build()
        )
    return builder.sign(issuer_key, hashes.SHA256())


def write_crl(
    directory: Path, revoked: Sequence[x509.Certificate], out: Path | None = None
) -> Path:
    """Write a CRL signed by the site CA under ``directory`` revoking ``revoked``.

    The file is ``crl.pem`` in ``out`` (default ``directory``); it is valid for 30 days.
    """
    ca_key, ca_cert = load_site_ca(directory)
    crl = build_crl(ca_key, ca_cert, revoked)
    path = (out or directory) / "crl.pem"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, path)
    return path


def load_identity(cert: Path, key: Path | None = None) -> ssl.PrivateCertificate:
    """A client identity from a certificate file and its key (or one PEM holding both)."""
    data = cert.read_bytes() if key is None else key.read_bytes() + b"\n" + cert.read_bytes()
    private: ssl.PrivateCertificate = ssl.PrivateCertificate.loadPEM(data)
    return private
