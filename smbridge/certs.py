"""``smbridge certs``: keys, CSRs and certificates for named CIC servers (the role of gensslcertsu).

For each named server (the primary and, with ``--backup``, the backup of a
switchover pair), with ``--bridge``, a bridge's client identity (``NAME-client``,
for ``twistd smbridge --client-cert``) and, with ``--listener``, a bridge's own
listener certificate (named by the bridge's ``--fqdn``, for ``twistd smbridge
--cert``), it writes into ``--out``:

- ``NAME.key``: a new EC P-256 private key (mode 0600),
- ``NAME.csr``: a certificate signing request for an outside authority,
- ``NAME.pem``: key and certificate, signed by the site CA when ``--ca-dir`` holds
  ``ca.pem`` and ``ca.key`` (``--new-ca`` creates them in ``--out`` first); this is
  what ``twistd notifier --cert`` and ``twistd smbridge --cert``/``--client-cert``
  read.

With ``--client NAME`` (repeatable) it issues a client certificate for
certificate logon (``client-NAME.pem`` and ``client-NAME.key``, CN=NAME, from the
site CA), and with ``--revoke PEM`` (repeatable) it writes ``crl.pem``, a CRL
revoking those certificates, for ``twistd smbridge --client-crl`` (docs/client.md).

Existing files are never overwritten (but ``crl.pem``, which is replaced). Nothing
secret is printed.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from smbridge import pki


def csr_for(key: ec.EllipticCurvePrivateKey, name: str, dns: Sequence[str]) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    )
    if dns:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns]), critical=False
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def load_ca(directory: Path) -> tuple[Any, x509.Certificate]:
    """The site CA's key and certificate (``ca.key``, ``ca.pem``) in ``directory``."""
    key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    return key, cert


def write_identity(
    out: Path,
    name: str,
    dns: Sequence[str],
    ca: tuple[Any, x509.Certificate] | None,
    client: bool = False,
) -> list[Path]:
    """Write NAME.key, NAME.csr and (with a CA) NAME.pem; FileExistsError if any exists."""
    paths = [out / f"{name}.key", out / f"{name}.csr"] + ([out / f"{name}.pem"] if ca else [])
    for path in paths:
        if path.exists():
            raise FileExistsError(f"{path} exists; not overwriting it")
    names = tuple(dict.fromkeys([name, *dns]))
    if ca is not None:
        key, cert = pki.issue(ca[0], ca[1], name, names, client=client, server=not client)
        pki.write_private(out / f"{name}.pem", pki.key_pem(key) + pki.cert_pem(cert))
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    pki.write_private(out / f"{name}.key", pki.key_pem(key))
    (out / f"{name}.csr").write_bytes(csr_for(key, name, names))
    return paths


def client_certificates(
    out: Path, ca_dir: Path | None, names: Sequence[str], revoke: Sequence[Path]
) -> list[Path]:
    """Client certificates for ``names`` and a CRL revoking ``revoke``, from ``ca_dir``'s CA."""
    written: list[Path] = []
    if ca_dir is None:
        return written
    for name in names:
        for path in (out / f"client-{name}.pem", out / f"client-{name}.key"):
            if path.exists():
                raise FileExistsError(f"{path} exists; not overwriting it")
        issued = pki.issue_client(ca_dir, name, out)
        written += [issued.cert, issued.key]
    if revoke:
        certs = [x509.load_pem_x509_certificate(p.read_bytes()) for p in revoke]
        written.append(pki.write_crl(ca_dir, certs, out))
    return written


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "certs", help="keys, CSRs and certificates for CIC servers and bridges (gensslcertsu)"
    )
    p.add_argument("--out", type=Path, required=True, help="directory to write into")
    p.add_argument("--server", help="the CIC server's name (the primary)")
    p.add_argument("--backup", help="the backup server of a switchover pair")
    p.add_argument(
        "--dns", action="append", default=[], help="another DNS name of the server (repeatable)"
    )
    p.add_argument(
        "--bridge", help="a bridge's client identity toward the Notifier: NAME-client.pem"
    )
    p.add_argument(
        "--listener",
        metavar="FQDN",
        help="a bridge's own listener certificate for the name clients use: FQDN.pem",
    )
    p.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="NAME",
        help="a client certificate for certificate logon: client-NAME.pem/.key (repeatable)",
    )
    p.add_argument(
        "--revoke",
        action="append",
        default=[],
        type=Path,
        metavar="PEM",
        help="write crl.pem revoking this certificate (repeatable)",
    )
    p.add_argument("--ca-dir", type=Path, help="directory with the site CA (ca.pem, ca.key)")
    p.add_argument("--new-ca", action="store_true", help="create a site CA in --out first")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    out: Path = args.out
    clients: list[str] = getattr(args, "client", [])
    revoke: list[Path] = getattr(args, "revoke", [])
    if not (args.server or args.bridge or args.listener or clients or revoke):
        raise argparse.ArgumentTypeError(
            "give --server, --bridge, --listener, --client or --revoke"
        )
    if (clients or revoke) and not (args.ca_dir or args.new_ca):
        raise argparse.ArgumentTypeError("--client and --revoke need the CA: --ca-dir or --new-ca")
    if args.backup and not args.server:
        raise argparse.ArgumentTypeError("--backup needs --server")
    if args.new_ca and args.ca_dir:
        raise argparse.ArgumentTypeError("give --ca-dir or --new-ca, not both")
    out.mkdir(parents=True, exist_ok=True)
    ca_dir: Path | None = args.ca_dir
    if args.new_ca:
        if (out / "ca.pem").exists():
            raise argparse.ArgumentTypeError(f"{out / 'ca.pem'} exists; use --ca-dir {out}")
        key, cert = pki.make_ca()
        pki.write_private(out / "ca.key", pki.key_pem(key))
        (out / "ca.pem").write_bytes(pki.cert_pem(cert))
        ca_dir = out
    try:
        ca = load_ca(ca_dir) if ca_dir is not None else None
        written: list[Path] = []
        if args.server:
            written += write_identity(out, args.server, args.dns, ca)
        if args.backup:
            written += write_identity(out, args.backup, args.dns, ca)
        if args.bridge:
            written += write_identity(out, f"{args.bridge}-client", [args.bridge], ca, client=True)
        if args.listener:
            written += write_identity(out, args.listener, [], ca)
        written += client_certificates(out, ca_dir, clients, revoke)
    except (OSError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    for path in written:
        print(path)
