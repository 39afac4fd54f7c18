"""Client certificates and a site that maps them to users (certificate logon tests).

:func:`make_cert_pki` mints, under a site PKI directory, the certificates the
certificate-logon tests and demos need, and a CRL; :func:`cert_site` is the demo
site with users mapped to them:

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

from smbridge import pki


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
