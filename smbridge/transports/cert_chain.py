"""Client certificate chains: a leaf and its intermediates, verified up to a client CA.

:func:`verify_chain` lets OpenSSL (through pyOpenSSL's ``X509Store``) build and check
the path from the client's leaf certificate, through the intermediates the client
sent, to one of the configured client CAs, at an injected time ``now``. The client
CAs are the trust anchors; with ``PARTIAL_CHAIN`` an intermediate CA listed among
them anchors a chain too (behind nginx only the leaf arrives, so an operator lists
the intermediates there). OpenSSL's verdict maps to our reasons: a certificate of
the chain outside its validity period is ``certificate-expired``, anything else
(no path to a client CA, a bad signature, a non-CA issuer, a path too long) is
``certificate-untrusted``.

OpenSSL is chosen over cryptography's ``x509.verification`` verifier because the
latter enforces the CA/Browser-Forum profile (authority key identifiers, critical
basic constraints, SAN rules) that certificates made by ordinary tools often miss;
OpenSSL checks what RFC 5280 path validation needs and nothing more. Revocation is
checked here, not by OpenSSL's ``CRL_CHECK``, because OpenSSL refuses a chain when an
issuer has no CRL at all, while a client CRL file (``--client-crl``) holds the CRLs
of whichever issuers publish one: :func:`revoked_in` looks every certificate of the
verified chain up in the CRL of its issuer, when that CRL is in the file and signed
by that issuer.
"""

from __future__ import annotations

import datetime
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from OpenSSL import crypto

UNTRUSTED = "certificate-untrusted"
EXPIRED = "certificate-expired"
REVOKED = "certificate-revoked"
MAX_INTERMEDIATES = 8  # certificates taken from a client's chain besides its leaf

# OpenSSL's X509_V_ERR_* codes that mean "outside its validity period"
_TIME_ERRORS = frozenset({9, 10})  # CERT_NOT_YET_VALID, CERT_HAS_EXPIRED


@dataclass(frozen=True)
class ChainVerdict:
    """The chain's verdict: ``reason`` None means good; ``chain`` is leaf first, anchor last."""

    reason: str | None
    detail: str = ""
    chain: tuple[x509.Certificate, ...] = ()


def verify_chain(
    anchors: Sequence[x509.Certificate],
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    now: datetime.datetime,
) -> ChainVerdict:
    """Whether ``leaf`` chains through ``intermediates`` to one of ``anchors`` at ``now``."""
    store = crypto.X509Store()
    store.set_time(now.astimezone(datetime.UTC))  # before set_flags: it resets the params
    store.set_flags(crypto.X509StoreFlags.PARTIAL_CHAIN)
    for anchor in anchors:
        store.add_cert(crypto.X509.from_cryptography(anchor))
    extra = [crypto.X509.from_cryptography(c) for c in intermediates[:MAX_INTERMEDIATES]]
    context = crypto.X509StoreContext(store, crypto.X509.from_cryptography(leaf), extra)
    try:
        verified = context.get_verified_chain()
    except crypto.X509StoreContextError as e:
        code, depth, text = _error_of(e)
        if code in _TIME_ERRORS:
            return ChainVerdict(EXPIRED, _expired_detail(e.certificate, depth))
        subject = e.certificate.to_cryptography().subject.rfc4514_string()[:128]
        return ChainVerdict(UNTRUSTED, f"{text} (depth {depth}: {subject})")
    return ChainVerdict(None, "", tuple(c.to_cryptography() for c in verified))


def _expired_detail(cert: crypto.X509, depth: int) -> str:
    if depth == 0:
        return "outside its validity period"
    subject = cert.to_cryptography().subject.rfc4514_string()[:128]
    return f"an issuing CA ({subject}) is outside its validity period"


def _error_of(e: crypto.X509StoreContextError) -> tuple[int, int, str]:
    errors: list[Any] = list(e.errors)
    if len(errors) >= 3:
        return int(errors[0]), int(errors[1]), str(errors[2])
    return -1, -1, str(e)


def revoked_in(
    chain: Sequence[x509.Certificate], crls: Sequence[x509.CertificateRevocationList]
) -> str:
    """What in the verified ``chain`` (leaf first) a CRL revokes; "" when nothing.

    Each certificate is looked up in the CRLs its issuer (the next one up) signed; the
    anchor's own issuer is not in the chain, so its revocation is not looked for.
    """
    for cert, issuer in zip(chain, chain[1:], strict=False):
        for crl in crls:
            if crl.issuer != issuer.subject or not crl.is_signature_valid(
                issuer.public_key()  # type: ignore[arg-type]
            ):
                continue
            if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                which = "the certificate" if cert is chain[0] else "an issuing CA"
                return f"{which} ({cert.subject.rfc4514_string()[:128]}) revoked by the CRL"
    return ""


class ChainMemory:
    """The intermediates last verified with each leaf, for TLS sessions resumed later.

    A session resumed from a ticket keeps the client's leaf but not the chain it
    sent; the chain sent with that leaf in a full handshake, verified then, stands in
    for it (and is verified again). Bounded: the oldest leaf is forgotten first.
    """

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._chains: OrderedDict[bytes, tuple[x509.Certificate, ...]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._chains)

    def remember(self, leaf: x509.Certificate, chain: Sequence[x509.Certificate]) -> None:
        key = leaf.fingerprint(hashes.SHA256())
        self._chains[key] = tuple(chain[:MAX_INTERMEDIATES])
        self._chains.move_to_end(key)
        while len(self._chains) > self.size:
            self._chains.popitem(last=False)

    def recall(self, leaf: x509.Certificate) -> tuple[x509.Certificate, ...]:
        return self._chains.get(leaf.fingerprint(hashes.SHA256()), ())


def peer_chain(conn: Any, memory: ChainMemory | None = None) -> tuple[x509.Certificate, ...]:
    """The certificates ``conn``'s TLS client sent besides its leaf (its intermediates).

    The server side of OpenSSL gives the chain without the leaf; a leaf found in it
    anyway is left to :func:`verify_chain`, where it is harmless. A resumed TLS
    session has no chain: ``memory`` gives the one last verified with its leaf.
    Empty when the connection has no TLS of its own.
    """
    transport = getattr(conn, "transport", None)
    handle = getattr(transport, "getHandle", None)
    if handle is None:
        return ()
    tls = handle()
    get = getattr(tls, "get_peer_cert_chain", None)
    if get is None:
        return ()
    chain = get(as_cryptography=True) or []
    if not chain and memory is not None and _resumed(tls):
        leaf = tls.get_peer_certificate(as_cryptography=True)
        return memory.recall(leaf) if leaf is not None else ()
    return tuple(chain[: MAX_INTERMEDIATES + 1])


def _resumed(tls: Any) -> bool:
    """Whether the TLS connection resumed a session (pyOpenSSL has no public call)."""
    from OpenSSL.SSL import _lib  # type: ignore[attr-defined]

    reused = getattr(_lib, "SSL_session_reused", None)
    ssl = getattr(tls, "_ssl", None)
    return bool(reused is not None and ssl is not None and reused(ssl))
