"""Users' client certificates in the site file (certificate logon, docs/site-file.md).

A user entry may name the certificate that logs it on without a password::

    certificate: {subject: "CN=agent1,O=Example"}          # or
    certificate: {fingerprint: "sha256:9f86d0...", subject: ...}
    requireCertificate: true   # a password alone no longer logs this user on

A subject is compared in its canonical RFC 4514 form (so spacing does not matter); a
fingerprint is the SHA-256 of the DER certificate, hex, colons allowed. When both
are given, both must match. :class:`CertificateIndex` finds the user for an
identity the bridge sends.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from smbridge.notifier.site_types import SiteError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SPACE_AFTER_COMMA = re.compile(r"(?<!\\),\s+")
CERTIFICATE_KEYS = {"certificate", "requireCertificate"}  # optional keys of a user entry


@dataclass(frozen=True)
class CertificateMatch:
    """What a user's certificate must be: its subject, its fingerprint, or both."""

    subject: str | None = None  # canonical RFC 4514
    fingerprint: str | None = None  # "sha256:<64 hex>"

    def matches(self, subject: str, fingerprint: str) -> bool:
        if self.fingerprint is not None and self.fingerprint != fingerprint:
            return False
        return self.subject is None or self.subject == subject


def canonical_subject(text: str) -> str:
    """``text`` (RFC 4514) in cryptography's canonical form; ValueError when unreadable."""
    tidy = _SPACE_AFTER_COMMA.sub(",", text.strip())  # "CN=a, O=b" reads as "CN=a,O=b"
    name = x509.Name.from_rfc4514_string(tidy)
    if not list(name):
        raise ValueError("an empty name")
    return name.rfc4514_string()


def canonical_fingerprint(text: str) -> str:
    """``sha256:<hex>`` from ``sha256:AB:CD...`` or plain hex; ValueError when not SHA-256."""
    value = text.strip().lower()
    if value.startswith("sha256:"):
        value = value[len("sha256:") :]
    value = value.replace(":", "")
    if not _HEX64.match(value):
        raise ValueError("expected sha256: and 64 hex digits")
    return f"sha256:{value}"


def parse_user_certificate(u: dict[str, Any], where: str) -> tuple[CertificateMatch | None, bool]:
    """A user entry's ``certificate`` and ``requireCertificate`` (SiteError names the field)."""
    require = u.get("requireCertificate", False)
    if not isinstance(require, bool):
        raise SiteError(f"{where}.requireCertificate: expected true or false")
    raw = u.get("certificate")
    if raw is None:
        if require:
            raise SiteError(f"{where}.requireCertificate: the user has no certificate entry")
        return None, require
    if not isinstance(raw, dict) or not raw or set(raw) - {"subject", "fingerprint"}:
        raise SiteError(f"{where}.certificate: expected a mapping with subject and/or fingerprint")
    subject = fingerprint = None
    try:
        if raw.get("subject") is not None:
            subject = canonical_subject(str(raw["subject"]))
    except ValueError as e:
        raise SiteError(f"{where}.certificate.subject: {e}") from None
    try:
        if raw.get("fingerprint") is not None:
            fingerprint = canonical_fingerprint(str(raw["fingerprint"]))
    except ValueError as e:
        raise SiteError(f"{where}.certificate.fingerprint: {e}") from None
    return CertificateMatch(subject, fingerprint), require


class CertificateIndex:
    """Users by certificate fingerprint and by subject."""

    def __init__(self, users: Iterable[tuple[str, CertificateMatch]]) -> None:
        self._by_fingerprint: dict[str, list[tuple[str, CertificateMatch]]] = {}
        self._by_subject: dict[str, list[tuple[str, CertificateMatch]]] = {}
        for user_id, match in users:
            if match.fingerprint is not None:
                self._by_fingerprint.setdefault(match.fingerprint, []).append((user_id, match))
            elif match.subject is not None:
                self._by_subject.setdefault(match.subject, []).append((user_id, match))

    def find(self, subject: str, fingerprint: str) -> list[str]:
        """The users this certificate maps to (a fingerprint entry first); usually one."""
        try:
            subject = canonical_subject(subject)
            fingerprint = canonical_fingerprint(fingerprint)
        except ValueError:
            return []
        for candidates in (
            self._by_fingerprint.get(fingerprint, []),
            self._by_subject.get(subject, []),
        ):
            found = [uid for uid, match in candidates if match.matches(subject, fingerprint)]
            if found:
                return found
        return []
