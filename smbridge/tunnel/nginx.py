"""Rendering the nginx site (nginx.conf.in, shipped in the package). Pure, apart from ``main``.

The proxy's alias maps are written from the same ``SM HTTPS URL Base Map`` value the
bridges read, plus the internal address (and certificate name) of each machine, so
the two cannot drift apart; its TLS 1.2 suites are the bridge's own list (Mozilla
"intermediate", :data:`smbridge.pki.MOZILLA_INTERMEDIATE_CIPHERS`). Every value is
checked before it reaches the file: nothing with whitespace, quotes, braces or
semicolons can slip in a directive. ``deploy/nginx/smbridge.conf.in`` is a link to
the template, for readers of a checkout.

    python -m smbridge.tunnel.nginx --base-map 'ICServer1234|IC&ossm1|edge1' \\
        --backend ICServer1234=10.0.0.40 --backend ossm1=10.0.0.41 \\
        --server-name proxy.example.com --cert /etc/ssl/proxy.pem --key /etc/ssl/proxy.key \\
        --internal-ca /etc/smbridge/ca.pem > /etc/nginx/conf.d/smbridge.conf
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from smbridge.pki import MOZILLA_INTERMEDIATE_CIPHERS
from smbridge.tunnel.route import parse_alias_map
from smbridge.tunnel.uris import KINDS

TEMPLATE = Path(__file__).resolve().with_name("nginx.conf.in")  # package data
WEBCLIENT_ROOT = Path(__file__).resolve().parents[1] / "webclient"
_SAFE = re.compile(r"^[A-Za-z0-9._:/@+=,\[\]*-]+$")  # no spaces, quotes, braces, ; or $
_HOSTNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})$")


@dataclass(frozen=True)
class Backend:
    alias: str  # the public alias, as in SM HTTPS URL Base Map
    address: str  # internal IP address (a host name needs an nginx `resolver`)
    tls_name: str  # the name on the machine's internal certificate


@dataclass(frozen=True)
class ProxySite:
    certificate: str
    certificate_key: str
    internal_ca: str
    backends: tuple[Backend, ...]
    listen: str = "443"
    server_name: str = "_"
    session_scheme: str = "wss"  # the hop to the bridge: wss (8952) or ws (8951)
    session_port: int | None = None  # default: 8952 for wss, 8951 for ws
    ports: Mapping[str, int] = field(default_factory=dict)  # Table 8 overrides, by kind
    ws_timeout: str = "90s"
    webclient_root: str = str(WEBCLIENT_ROOT)
    # Certificate logon: the client CA (None: no certificate asked for), its CRL, and
    # ssl_verify_client's mode. A session request with a certificate nginx finds
    # expired, revoked or (with "optional") from another CA is still passed on to the
    # bridge (the template's error_page 495 route), which answers logon-failed with the
    # reason; any other request with one gets 400. optional_no_ca passes a certificate
    # from another CA on everywhere, on the normal routes.
    client_ca: str | None = None
    client_crl: str | None = None
    client_verify: str = "optional"


def backends_from_map(
    base_map: str, addresses: Mapping[str, str], tls_names: Mapping[str, str] | None = None
) -> tuple[Backend, ...]:
    """One backend per alias of ``base_map`` whose machine has an address.

    ``addresses`` and ``tls_names`` are keyed by machine name (any case); the TLS name
    defaults to the machine name. Raises ValueError for a map entry the bridges would
    skip, or a machine with an address but no alias (it would be unreachable).
    """
    aliases, problems = parse_alias_map(base_map)
    if problems:
        raise ValueError(f"SM HTTPS URL Base Map: {'; '.join(problems)}")
    names = {k.lower(): v for k, v in (tls_names or {}).items()}
    backends = []
    for machine, address in addresses.items():
        alias = aliases.alias_of(machine)
        if alias is None:
            raise ValueError(f"{machine} has no alias in the map; public URIs could not name it")
        backends.append(Backend(alias, address, names.get(machine.lower(), machine)))
    return tuple(backends)


def _safe(what: str, value: str) -> str:
    if not _SAFE.match(value):
        raise ValueError(f"{what} {value!r} holds characters not allowed in the configuration")
    return value


def _address(value: str) -> str:
    try:
        ip = ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        if not _HOSTNAME.match(value):
            raise ValueError(
                f"backend address {value!r} is not an IP address or host name"
            ) from None
        return value
    return f"[{ip}]" if ip.version == 6 else str(ip)


def render(template: str, site: ProxySite) -> str:
    """The template with every ``@NAME@`` filled; ValueError for an unsafe value."""
    if site.session_scheme not in ("ws", "wss"):
        raise ValueError("session_scheme must be ws or wss")
    if not site.backends:
        raise ValueError("no backends: nothing to route to")
    ports = {kind: k.port for kind, k in KINDS.items()} | dict(site.ports)
    session_port = site.session_port or (8952 if site.session_scheme == "wss" else 8951)
    backends, tls_names = [], []
    for b in site.backends:
        alias = re.escape(_safe("alias", b.alias))
        backends.append(f'    "~*^{alias}$" {_address(b.address)};')
        tls_names.append(f'    "~*^{alias}$" {_safe("TLS name", b.tls_name)};')
    unknown_kinds = set(site.ports) - set(KINDS)
    if unknown_kinds:
        raise ValueError(f"unknown resource kinds: {', '.join(sorted(unknown_kinds))}")
    for port in (session_port, *ports.values()):
        if not 0 < int(port) < 65536:
            raise ValueError(f"port {port} is not between 1 and 65535")
    values = {
        "CLIENT_CERTS": client_certs(site),
        "BACKENDS": "\n".join(backends),
        "TLS12_CIPHERS": MOZILLA_INTERMEDIATE_CIPHERS,
        "TLS_NAMES": "\n".join(tls_names),
        "LISTEN": _safe("listen", site.listen),
        "SERVER_NAME": _safe("server name", site.server_name),
        "CERTIFICATE": _safe("certificate path", site.certificate),
        "CERTIFICATE_KEY": _safe("key path", site.certificate_key),
        "INTERNAL_CA": _safe("CA path", site.internal_ca),
        "WEBCLIENT_ROOT": _safe("webclient root", site.webclient_root.rstrip("/")),
        "SESSION_SCHEME": "https" if site.session_scheme == "wss" else "http",
        "SESSION_PORT": str(int(session_port)),
        "WS_TIMEOUT": _safe("timeout", site.ws_timeout),
        **{f"PORT_{kind.upper()}": str(int(port)) for kind, port in ports.items()},
    }
    unknown = set(re.findall(r"@([A-Z0-9_]+)@", template)) - set(values)
    if unknown:
        raise ValueError(f"the template has unknown fields: {', '.join(sorted(unknown))}")
    return re.sub(r"@([A-Z0-9_]+)@", lambda m: values[m.group(1)], template)


def client_certs(site: ProxySite) -> str:
    """The server block's client-certificate directives ("" without a client CA)."""
    if site.client_ca is None:
        if site.client_crl is not None:
            raise ValueError("a client CRL needs a client CA")
        return "    # (no client CA: no certificate is asked for)"
    if site.client_verify not in ("optional", "optional_no_ca"):
        raise ValueError("client_verify must be optional or optional_no_ca")
    lines = [
        f"    ssl_client_certificate {_safe('client CA path', site.client_ca)};",
        f"    ssl_verify_client {site.client_verify};",
    ]
    if site.client_crl is not None:
        lines.append(f"    ssl_crl {_safe('client CRL path', site.client_crl)};")
    return "\n".join(lines)


def _pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise SystemExit(f"{flag} {item!r}: expected MACHINE=VALUE")
        pairs[key] = value
    return pairs


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port {port} is not between 1 and 65535")
    return port


def _kind_port(text: str) -> tuple[str, int]:
    kind, sep, port = text.partition("=")
    if not sep or kind.lower() not in KINDS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected KIND=PORT, KIND one of {', '.join(KINDS)}"
        )
    return kind.lower(), _port(port)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m smbridge.tunnel.nginx",
        description="Render the nginx site for smbridge (written to standard output).",
        epilog="Table 8 ports by default: "
        + ", ".join(f"{kind}={k.port}" for kind, k in KINDS.items()),
    )
    p.add_argument("--base-map", required=True, help="the SM HTTPS URL Base Map value")
    p.add_argument(
        "--backend",
        action="append",
        default=[],
        metavar="MACHINE=ADDRESS[,TLSNAME]",
        help="internal address of a machine in the map (repeatable)",
    )
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--internal-ca", required=True)
    p.add_argument("--listen", default="443")
    p.add_argument("--server-name", default="_")
    p.add_argument(
        "--session-scheme",
        choices=("ws", "wss"),
        default="wss",
        help="the hop from the proxy to the bridges' tunnel (default: wss)",
    )
    p.add_argument(
        "--session-port",
        type=_port,
        help="the bridges' tunnel port (default: 8952 for wss, 8951 for ws)",
    )
    p.add_argument(
        "--port",
        action="append",
        default=[],
        type=_kind_port,
        metavar="KIND=PORT",
        help=f"a Table 8 port on the CIC server (repeatable); KIND: {', '.join(KINDS)}",
    )
    p.add_argument("--ws-timeout", default="90s")
    p.add_argument("--client-ca", help="PEM: ask clients for certificates from this CA")
    p.add_argument("--client-crl", help="PEM: the client CA's CRL")
    p.add_argument(
        "--client-verify",
        choices=("optional", "optional_no_ca"),
        default="optional",
        help="ssl_verify_client mode (default optional)",
    )
    p.add_argument(
        "--template", type=Path, default=TEMPLATE, help="default: the one in the package"
    )
    p.add_argument("--webclient-root", default=str(WEBCLIENT_ROOT))
    args = p.parse_args(argv)
    addresses, names = {}, {}
    for machine, value in _pairs(args.backend, "--backend").items():
        address, _, tls_name = value.partition(",")
        addresses[machine] = address
        if tls_name:
            names[machine] = tls_name
    try:
        site = ProxySite(
            certificate=args.cert,
            certificate_key=args.key,
            internal_ca=args.internal_ca,
            backends=backends_from_map(args.base_map, addresses, names),
            listen=args.listen,
            server_name=args.server_name,
            session_scheme=args.session_scheme,
            session_port=args.session_port,
            ports=dict(args.port),
            ws_timeout=args.ws_timeout,
            webclient_root=args.webclient_root,
            client_ca=args.client_ca,
            client_crl=args.client_crl,
            client_verify=args.client_verify,
        )
        sys.stdout.write(render(args.template.read_text(encoding="utf-8"), site))
    except ValueError as e:
        raise SystemExit(f"smbridge nginx: {e}") from None


if __name__ == "__main__":
    main()
