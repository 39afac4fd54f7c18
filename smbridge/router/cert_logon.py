"""CreateSession ``{auth: "certificate"}``: the Authenticate request from a client certificate.

The bridge judges the connection's certificate itself (chain to the client CA,
validity, CRL: transports/client_certs.py) and sends the Notifier only the
identity of a good one; the Notifier maps it to a user by fingerprint or subject
(docs/site-file.md) and answers as for a password. Every refusal is
``logon-failed`` with a reason, and counts in the logon throttle like a wrong
password (session_requests.py settles the attempt).
"""

from __future__ import annotations

import datetime
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from smbridge.errors import BadRequest, LogonFailed
from smbridge.session.certificate import CertificateIdentity
from smbridge.transports.client_certs import (
    EXPIRED,
    NO_CERTIFICATE,
    REVOKED,
    UNTRUSTED,
    ClientCertificates,
    judge,
)

AUTH_KINDS = ("password", "certificate")
log = Logger()

MESSAGES = {
    NO_CERTIFICATE: "no client certificate was presented on this connection",
    UNTRUSTED: "the client certificate is not from a trusted client CA",
    EXPIRED: "the client certificate is outside its validity period",
    REVOKED: "the client certificate has been revoked",
}


def auth_kind(body: dict[str, Any]) -> str:
    """CreateSession's ``auth``: ``password`` (the default) or ``certificate``."""
    kind = body.get("auth", "password")
    if kind not in AUTH_KINDS:
        raise BadRequest('auth must be "password" or "certificate"')
    return str(kind)


def certificate_request(
    conn: Any,
    certificates: ClientCertificates | None,
    clock: IReactorTime,
    user: str | None,
    station: str | None,
) -> tuple[dict[str, Any], CertificateIdentity]:
    """The Authenticate payload for ``conn``'s certificate, or LogonFailed with a reason."""
    now = datetime.datetime.fromtimestamp(clock.seconds(), datetime.UTC)
    check = judge(conn, certificates, now)
    if check.reason is not None or check.identity is None:
        reason = check.reason or UNTRUSTED
        log.info(
            "Certificate logon from {remote} refused: {reason} ({detail}), subject {subject}",
            remote=getattr(conn, "remote", ""),
            reason=reason,
            detail=check.detail,
            subject=check.identity.subject[:128] if check.identity else "-",
            event="session.certificate_refused",
        )
        raise LogonFailed(
            MESSAGES.get(reason, "the client certificate was refused"),
            reason=reason,
        )
    request: dict[str, Any] = {"certificate": check.identity.to_wire(), "station": station}
    if user:
        request["user"] = user
    return request, check.identity
