"""Client certificates and a site that maps them to users (certificate logon tests).

:func:`make_cert_pki` mints, under a site PKI directory, the certificates the
certificate-logon tests and demos need, and a CRL; :func:`cert_site` is the demo
site with users mapped to them (:func:`start_cert_site` starts it, the bridge asking
for the certificates):

=============  ==========================================================  ==============
certificate    what it is                                                  logon outcome
=============  ==========================================================  ==============
``agent1``     site CA, CN=agent1; the site maps agent1 by subject         agent1
``agent2``     site CA, CN=agent2; mapped by fingerprint, requireCertificate agent2
``stranger``   site CA, CN=stranger; no user maps it                       certificate-unknown
``expired``    site CA, CN=agent1, validity ended yesterday                certificate-expired
``revoked``    site CA, CN=agent3 (mapped by subject), in the CRL          certificate-revoked
``foreign``    another CA, CN=agent1                                       certificate-untrusted
=============  ==========================================================  ==============
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer

from smbridge import pki
from smbridge.testing.site import start_site


@dataclass(frozen=True)
class CertPKI:
    """The site PKI directory, the client certificates by name, and the CRL file."""

    directory: Path
    clients: dict[str, pki.ClientCertificate]
    crl: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    def fingerprint(self, name: str) -> str:
        from cryptography.hazmat.primitives import hashes

        return "sha256:" + self.clients[name].certificate.fingerprint(hashes.SHA256()).hex()


def make_cert_pki(directory: Path) -> CertPKI:
    """The site PKI (created if missing), the table's client certificates and the CRL."""
    pki.ensure_site_pki(directory)
    out = directory / "clients"
    clients = {
        "agent1": pki.issue_client(directory, "agent1", out),
        "agent2": pki.issue_client(directory, "agent2", out),
        "stranger": pki.issue_client(directory, "stranger", out),
        "revoked": pki.issue_client(directory, "agent3", out),
    }
    expired_dir = out / "expired"
    clients["expired"] = pki.issue_client(directory, "agent1", expired_dir, expired=True)
    clients["foreign"] = _foreign(out / "foreign")
    crl = pki.write_crl(directory, [clients["revoked"].certificate])
    return CertPKI(directory, clients, crl)


def _foreign(out: Path) -> pki.ClientCertificate:
    """CN=agent1 from a CA the bridge does not trust."""
    ca_key, ca_cert = pki.make_ca("some other CA")
    key, cert = pki.issue(ca_key, ca_cert, "agent1", client=True, server=False)
    out.mkdir(parents=True, exist_ok=True)
    files = pki.ClientCertificate(out / "client-agent1.pem", out / "client-agent1.key", cert)
    files.cert.write_bytes(pki.cert_pem(cert))
    pki.write_private(files.key, pki.key_pem(key))
    return files


def cert_site_dict(certs: CertPKI) -> dict[str, Any]:
    """The demo site with agent1 (subject), agent2 (fingerprint, certificate required)
    and agent3 (subject) mapped to client certificates."""
    from smbridge.notifier.demo import demo_site_dict

    data = demo_site_dict()
    for user in data["users"]:
        if user["id"] in ("agent1", "agent3"):
            user["certificate"] = {"subject": f"CN={user['id']}, O=smbridge"}
        elif user["id"] == "agent2":
            user["certificate"] = {"fingerprint": certs.fingerprint("agent2").upper()}
            user["requireCertificate"] = True
    return data


def cert_site(certs: CertPKI) -> Any:
    """:func:`cert_site_dict` as a Site."""
    from smbridge.notifier.site import Site

    return Site.from_dict(cert_site_dict(certs))


@defer.inlineCallbacks
def start_cert_site(reactor: Any, work: Path, **options: Any) -> Any:
    """Fires with ``(certs, site)``: :func:`make_cert_pki` under ``work/pki`` and the
    :func:`cert_site` started, its TLS and wss ports asking for a client certificate
    checked against the CA and the CRL, no proxy's headers believed; ``options`` are
    more :func:`~smbridge.testing.start_site` arguments (or replace these)."""
    from smbridge.config import TunnelSettings

    certs = make_cert_pki(work / "pki")
    settings: dict[str, Any] = {
        "client_ca": certs.ca,
        "client_crl": certs.crl,
        "wss_port": 0,
        "tunnel": TunnelSettings(trusted_proxies=()),  # nobody's headers are believed
    }
    site = yield start_site(reactor, work, site=cert_site(certs), **{**settings, **options})
    return certs, site


class RecordingHook:
    """A session hook that keeps the infos it was asked about (the certificate seen)."""

    def __init__(self) -> None:
        self.infos: list[Any] = []

    def create(self, info: Any, control: Any) -> None:
        self.infos.append(info)

    def destroy(self, session: Any, reason: str) -> None:
        pass


def certificate_logons_on_resumed_tls(
    port: int, ca: Path, cert: Path, key: Path, version: Any, label: str, count: int = 2
) -> list[tuple[bool | None, Any]]:
    """``count`` certificate logons over TLS ``version``, each offering the previous
    connection's session (ticket): (was it resumed, the reply's ``auth`` or ``reason``).

    Blocking (the stdlib's ``ssl``): run it in a thread (``deferToThread``).
    """
    import socket
    import ssl

    from smbridge.codec import Decoder, Frame, Kind, encode
    from smbridge.codec import catalog as c

    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = context.maximum_version = version
    context.load_cert_chain(str(cert), str(key))
    seen: list[tuple[bool | None, Any]] = []
    session = None
    for n in range(count):
        with socket.create_connection(("127.0.0.1", port), 5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                tls.settimeout(5)
                body = {"auth": "certificate", "clientId": f"{label}-{version}-{n}"}
                tls.sendall(encode(Kind.REQUEST, *c.CREATE_SESSION, 1, body))
                decoder, frames = Decoder(), list[Any]()
                while not frames:
                    chunk = tls.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed before the logon's answer")
                    frames = decoder.feed(chunk)
                if not isinstance(frames[0], Frame):
                    raise ValueError(f"a bad frame from the bridge: {frames[0]}")
                reply = frames[0].parsed()
                seen.append((tls.session_reused, reply.get("auth") or reply.get("reason")))
                session = tls.session
    return seen
