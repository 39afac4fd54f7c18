"""The identity a client certificate gives a session (Glacier2's ``SSLInfo``).

Built by the bridge from a verified client certificate (transports/client_certs.py)
and carried in :class:`~smbridge.session.session.SessionInfo` as ``certificate``, so
the session hook sees it; None for a password logon. Pure data, no crypto here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CertificateIdentity:
    """Who a client certificate names, and how it reached the bridge."""

    subject: str  # RFC 4514, e.g. "CN=agent1,O=Example"
    fingerprint: str  # "sha256:" + lowercase hex of the DER certificate
    issuer: str  # RFC 4514
    not_after: str  # ISO 8601, UTC
    serial: str = ""  # lowercase hex
    via: str = "tls"  # "tls": this connection's own handshake; "proxy": the proxy's header

    def to_wire(self) -> dict[str, str]:
        """The form sent to the Notifier in Authenticate (and shown to clients)."""
        return {
            "subject": self.subject,
            "fingerprint": self.fingerprint,
            "issuer": self.issuer,
            "notAfter": self.not_after,
        }
