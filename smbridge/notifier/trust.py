"""Which bridge certificates the Notifier accepts, as in the note: trusted ones only.

A bridge's client certificate must chain to the site CA (the TLS layer checks
that) and be trusted here. A certificate the Notifier has not seen before is
recorded as ``new`` and its Register refused with ``certificate-not-trusted``;
an administrator trusts it with ``POST /api/certificates/{fingerprint}/trust``
(the control API lists them), and the bridge's next attempt is accepted. The
store is a JSON file so trust survives a restart: written atomically, its
directory created (0700) when missing (notifier/store.py). A store that cannot
be written never takes the link down: a new certificate is still refused (and
logged), and a trust that cannot be saved is undone and reported, so what the
control API answers is what the next start reads. Fingerprints are SHA-256 of
the DER certificate, lowercase hex without separators.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.logger import Logger

from smbridge.errors import ProtocolError
from smbridge.notifier.store import StoreError, read_json, write_json

NEW = "new"
TRUSTED = "trusted"


class NotTrusted(ProtocolError):
    code = "certificate-not-trusted"


class TrustStoreError(Exception):
    """A trust decision could not be saved; nothing changed."""


def fingerprint_der(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def fingerprint_pem(path: Path) -> str:
    """The fingerprint of the first certificate in a PEM file."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return fingerprint_der(cert.public_bytes(serialization.Encoding.DER))


def normalise(fingerprint: str) -> str:
    """Accept ``AB:CD:...`` or hex in any case; ValueError when it is not SHA-256 hex."""
    text = fingerprint.replace(":", "").strip().lower()
    if len(text) != 64 or any(ch not in "0123456789abcdef" for ch in text):
        raise ValueError("a fingerprint is 64 hex digits (SHA-256)")
    return text


class CertificateTrust:
    """The Notifier's record of bridge certificates: ``new`` or ``trusted``."""

    log = Logger()

    def __init__(
        self,
        path: Path | None = None,
        trusted: Iterable[str] = (),
        trusted_files: Iterable[Path] = (),
    ) -> None:
        self.path = path
        self.certificates: dict[str, dict[str, Any]] = {}
        self._trusted = [normalise(fp) for fp in trusted]
        self._trusted_files = list(trusted_files)  # read on first use, not at construction
        self._loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.path is not None:
            try:
                data = read_json(self.path) or {}
            except StoreError as e:
                self.log.error(
                    "Trust store: {error}; every bridge certificate counts as new",
                    error=str(e),
                    event="notifier.trust.unreadable",
                )
                data = {}
            certificates = data.get("certificates", {})
            if isinstance(certificates, dict):
                self.certificates = {
                    fp: dict(entry) for fp, entry in certificates.items() if isinstance(entry, dict)
                }
        for fp in self._trusted + [fingerprint_pem(p) for p in self._trusted_files]:
            entry = self.certificates.setdefault(fp, {"subject": None, "firstSeen": None})
            entry["state"] = TRUSTED

    def check(self, der: bytes | None, subject: str, now: float) -> None:
        """Raise :class:`NotTrusted` unless the certificate is trusted (record it as new)."""
        self._load()
        if der is None:
            raise NotTrusted("the link presented no client certificate")
        fp = fingerprint_der(der)
        entry = self.certificates.get(fp)
        if entry is not None and entry.get("state") == TRUSTED:
            return
        if entry is None:
            self.certificates[fp] = {"state": NEW, "subject": subject, "firstSeen": now}
            try:
                self._save()
            except TrustStoreError as e:  # listed until a restart; the refusal stands
                self.log.error("{error}", error=str(e), event="notifier.trust.save_failed")
            self.log.warn(
                "New bridge certificate {fingerprint} ({subject}): not trusted yet",
                fingerprint=fp,
                subject=subject,
                event="notifier.trust.new",
            )
        raise NotTrusted("this bridge's certificate is not trusted by the site yet", fingerprint=fp)

    def trust(self, fingerprint: str) -> dict[str, Any]:
        """Trust a certificate (seen or not yet seen); return its entry."""
        fp = normalise(fingerprint)
        self._load()
        old = self.certificates.get(fp)
        entry = {"subject": None, "firstSeen": None, **(old or {}), "state": TRUSTED}
        self.certificates[fp] = entry
        try:
            self._save()
        except TrustStoreError:
            if old is None:
                del self.certificates[fp]
            else:
                self.certificates[fp] = old
            raise
        self.log.info(
            "Trusted bridge certificate {fingerprint}",
            fingerprint=fp,
            event="notifier.trust.trusted",
        )
        return {"fingerprint": fp, **entry}

    def listing(self) -> list[dict[str, Any]]:
        self._load()
        return [{"fingerprint": fp, **entry} for fp, entry in sorted(self.certificates.items())]

    def _save(self) -> None:
        """Write the store atomically; TrustStoreError when it cannot be written."""
        if self.path is None:
            return
        try:
            write_json(self.path, {"certificates": self.certificates})
        except StoreError as e:
            raise TrustStoreError(f"the trust store was not saved: {e}") from e
