"""Real nginx in front of real bridges for the tunnel's tests (and benchmarks).

* :func:`start_proxy` runs Debian's nginx as a subprocess (never the system service)
  from the package's nginx.conf.in, rendered into a temporary directory with a test
  certificate signed by the site's CA, on a loopback port.
* :func:`start_proxied_site` and :func:`start_proxied_pair` run a site (Notifier and
  bridges) behind it.

Headless Chromium, :func:`need_binary` and :func:`poll` are in harness.py; they are
re-exported here. Waiting is by polling with a deadline on the reactor; nothing sleeps.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer

from smbridge.testing import stop_process
from smbridge.tunnel.harness import (
    CHROMIUM,
    Chromium,
    DevToolsError,
    free_port,
    need_binary,
    poll,
    start_chromium,
)

__all__ = [
    "BASE_MAP",
    "CHROMIUM",
    "NGINX",
    "PAIR_BASE_MAP",
    "Chromium",
    "DevToolsError",
    "ProxiedPair",
    "ProxiedSite",
    "ProxyCertificate",
    "RunningProxy",
    "echo_site",
    "free_port",
    "issue_proxy_certificate",
    "need_binary",
    "per_alias_session_ports",
    "poll",
    "start_chromium",
    "start_proxied_pair",
    "start_proxied_site",
    "start_proxy",
]

NGINX = "/usr/sbin/nginx"


# --- certificates ---------------------------------------------------------------------
@dataclass(frozen=True)
class ProxyCertificate:
    cert: Path
    key: Path
    spki_sha256: str  # base64 SHA-256 of the public key, for Chromium's SPKI allow-list


def issue_proxy_certificate(pki_dir: Path, out: Path) -> ProxyCertificate:
    """A certificate for the test proxy (localhost, 127.0.0.1), signed by the site's CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from smbridge import pki

    ca_key = serialization.load_pem_private_key((pki_dir / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((pki_dir / "ca.pem").read_bytes())
    key, cert = pki.issue(
        ca_key,  # type: ignore[arg-type]
        ca_cert,
        "proxy.test",
        ("localhost", "proxy.test"),
        ("127.0.0.1",),
        days=2,
    )
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out / "proxy.pem", out / "proxy.key"
    cert_path.write_bytes(pki.cert_pem(cert))
    pki.write_private(key_path, pki.key_pem(key))
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return ProxyCertificate(
        cert_path, key_path, base64.b64encode(hashlib.sha256(spki).digest()).decode()
    )


# --- nginx ----------------------------------------------------------------------------
_MAIN_CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
{user}
events {{ worker_connections 512; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    types {{
        text/html html;
        text/css css;
        application/javascript js;
        image/png png;
    }}
    default_type application/octet-stream;
    include {dir}/smbridge.conf;
}}
"""


@dataclass
class RunningProxy:
    """An nginx subprocess serving the rendered smbridge site on 127.0.0.1:``port``."""

    proc: subprocess.Popen[bytes]
    port: int
    directory: Path
    certificate: ProxyCertificate
    config: str

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        stop_process(self.proc)


@defer.inlineCallbacks
def start_proxy(
    reactor: Any,
    work: Path,
    pki_dir: Path,
    backends: Mapping[str, str],
    base_map: str,
    ports: Mapping[str, int],
    session_port: int,
    session_scheme: str = "wss",
    ws_timeout: str = "90s",
    nginx: str = NGINX,
    session_ports: Mapping[str, int] | None = None,
    client_ca: str | None = None,
    client_crl: str | None = None,
) -> Any:
    """Render the package's nginx.conf.in and run nginx on it; fires with a RunningProxy.

    ``backends`` maps machine names of ``base_map`` to ``address[,tls-name]``;
    ``session_ports`` maps aliases whose tunnel is not on ``session_port`` to theirs.
    """
    from smbridge.tunnel.nginx import TEMPLATE, ProxySite, backends_from_map, render

    directory = Path(tempfile.mkdtemp(prefix="nginx-", dir=work))
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / "tmp" / sub).mkdir(parents=True)
    cert = issue_proxy_certificate(pki_dir, directory / "tls")
    addresses = {m: v.partition(",")[0] for m, v in backends.items()}
    names = {m: v.partition(",")[2] for m, v in backends.items() if "," in v}
    port = free_port()
    site = ProxySite(
        certificate=str(cert.cert),
        certificate_key=str(cert.key),
        internal_ca=str(pki_dir / "ca.pem"),
        backends=backends_from_map(base_map, addresses, names),
        listen=f"127.0.0.1:{port}",
        server_name="localhost",
        session_scheme=session_scheme,
        session_port=session_port,
        ports=dict(ports),
        ws_timeout=ws_timeout,
        client_ca=client_ca,  # certificate logon (tests/test_cert_logon_nginx.py)
        client_crl=client_crl,
    )
    config = render(TEMPLATE.read_text(encoding="utf-8"), site)
    if session_ports:
        config = per_alias_session_ports(config, session_port, session_ports)
    (directory / "smbridge.conf").write_text(config)
    user = ""
    if os.geteuid() == 0:  # workers must read the repository's webclient files
        import pwd

        user = f"user {pwd.getpwuid(os.getuid()).pw_name};"
    (directory / "nginx.conf").write_text(_MAIN_CONF.format(dir=directory, user=user))
    argv = [nginx, "-p", str(directory), "-c", str(directory / "nginx.conf"), "-e", "stderr"]
    check = subprocess.run([*argv, "-t"], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t refused the configuration:\n{check.stderr}\n{config}")
    log = (directory / "stderr.log").open("wb")
    proc = subprocess.Popen([*argv, "-g", "daemon off;"], stdout=log, stderr=subprocess.STDOUT)
    running = RunningProxy(proc, port, directory, cert, config)

    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited {proc.returncode}: {running.error_log()}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
        except OSError:
            return False
        return True

    try:
        yield poll(reactor, listening, "nginx listening")
    except Exception:
        running.stop()
        raise
    return running


# --- Chromium through the DevTools protocol -------------------------------------------
BASE_MAP = "cic1|IC&sm1|edge1"  # the demo CIC server and the test bridge, by alias


def echo_site(label: str) -> Any:
    """A twisted.web site answering every GET with JSON: its label and what it received."""
    from twisted.web.resource import Resource
    from twisted.web.server import Request, Site

    class Echo(Resource):
        isLeaf = True

        def render_GET(self, request: Request) -> bytes:
            request.setHeader(b"content-type", b"application/json")
            headers = {
                k.decode().lower(): v[0].decode()
                for k, v in request.requestHeaders.getAllRawHeaders()
            }
            return json.dumps(
                {"label": label, "uri": (request.uri or b"").decode(), "headers": headers}
            ).encode()

    site = Site(Echo())  # type: ignore[no-untyped-call]
    site.noisy = False
    return site


@dataclass
class ProxiedSite:
    """A Notifier and bridge (testing.start_site), Table 8 stand-ins, and nginx in front."""

    site: Any
    proxy: RunningProxy
    echo_ports: dict[str, Any]

    @defer.inlineCallbacks
    def stop(self) -> Any:
        self.proxy.stop()
        for port in self.echo_ports.values():
            yield port.stopListening()
        yield self.site.stop()


@defer.inlineCallbacks
def start_proxied_site(
    reactor: Any,
    work: Path,
    ws_timeout: str = "90s",
    session_scheme: str = "wss",
    proxy_options: Mapping[str, Any] | None = None,
    **bridge_options: Any,
) -> Any:
    """Start the site with its wss (or ws) tunnel, recorder/dialer echo servers, and nginx.

    The CIC server ``cic1`` is ``IC`` in public URIs and the bridge ``sm1`` is ``edge1``;
    both are 127.0.0.1 inside, with certificates for ``localhost``.
    """
    from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint

    from smbridge import pki
    from smbridge.testing import start_site

    tunnel: dict[str, Any] = {"wss_port": 0} if session_scheme == "wss" else {"ws_port": 0}
    site = yield start_site(
        reactor,
        work,
        parameters={"SM HTTPS URL Base Map": BASE_MAP},
        resources=True,
        **tunnel,
        **bridge_options,
    )
    echo_ports: dict[str, Any] = {}
    try:
        for kind in ("recorder", "recordersecure", "dialer", "dialersecure"):
            if kind.endswith("secure"):
                endpoint: Any = SSL4ServerEndpoint(
                    reactor, 0, pki.server_options(site.pki.notifier), interface="127.0.0.1"
                )
            else:
                endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
            echo_ports[kind] = yield endpoint.listen(echo_site(kind))
        ports = {kind: port.getHost().port for kind, port in echo_ports.items()}
        ports.update(http=site.http_port, httpsecure=site.https_port, reporting=site.https_port)
        proxy = yield start_proxy(
            reactor,
            work,
            site.pki.ca.parent,
            {"cic1": "127.0.0.1,localhost", "sm1": "127.0.0.1,localhost"},
            BASE_MAP,
            ports,
            site.wss_port if session_scheme == "wss" else site.ws_port,
            session_scheme=session_scheme,
            ws_timeout=ws_timeout,
            nginx=need_binary(NGINX, "nginx"),
            **(proxy_options or {}),  # start_proxy's client_ca, client_crl
        )
    except BaseException:
        for port in echo_ports.values():
            yield port.stopListening()
        yield site.stop()
        raise
    return ProxiedSite(site, proxy, echo_ports)


# --- two bridges behind one nginx (the browser SDK's Migrate test) --------------------
PAIR_BASE_MAP = "cic1|IC&sm1|edge1&sm2|edge2"


def per_alias_session_ports(config: str, session_port: int, ports: Mapping[str, int]) -> str:
    """The rendered site with the session proxied to a port per alias (``ports``).

    The template has one session port for every bridge (each on its own host in a
    real site); tests run several bridges on 127.0.0.1, so each alias gets its own.
    """
    lines = "\n".join(f'    "~*^{alias}$" {port};' for alias, port in ports.items())
    block = f"map $sm_server $sm_session_port {{\n    default {session_port};\n{lines}\n}}\n"
    old = f"$sm_backend:{session_port}$request_uri"
    if old not in config:
        raise ValueError("the rendered site has no session proxy_pass to rewrite")
    return block + config.replace(old, "$sm_backend:$sm_session_port$request_uri")


@dataclass
class ProxiedPair:
    """A Notifier, bridges sm1 (``edge1``) and sm2 (``edge2``) with wss tunnels, nginx."""

    site: Any
    other: Any  # sm2's BridgeService
    proxy: RunningProxy

    @defer.inlineCallbacks
    def stop(self) -> Any:
        self.proxy.stop()
        yield defer.maybeDeferred(self.other.stopService)
        yield self.site.stop()


@defer.inlineCallbacks
def start_proxied_pair(reactor: Any, work: Path) -> Any:
    """Start sm1 (with its admin API) and sm2 of one site behind one nginx; a ProxiedPair.

    Fires once sm1's roster lists sm2 as available, so a drain can send Migrate to it.
    """
    from smbridge.config import BridgeConfig, NotifierAddress, TLSFiles
    from smbridge.router.router import BridgeIdentity
    from smbridge.service import BridgeService
    from smbridge.session.negotiate import TimeoutPolicy
    from smbridge.testing import start_site

    site = yield start_site(
        reactor,
        work,
        parameters={"SM HTTPS URL Base Map": PAIR_BASE_MAP},
        wss_port=0,
        admin_port=0,
    )
    other: Any = None
    try:
        files = site.pki
        config = BridgeConfig(
            identity=BridgeIdentity(
                "sm2", "localhost", location="Indianapolis", ports={"tls": 0, "wss": 0}
            ),
            tls=TLSFiles(files.bridge, files.bridge_client, files.ca),
            notifiers=(NotifierAddress("127.0.0.1", site.link_port),),
            notifier_name="localhost",
            port=0,
            interface="127.0.0.1",
            policy=TimeoutPolicy(1800, 60),
            wss_port=0,
        )
        other = BridgeService(config, reactor)
        other.startService()
        yield other.when_ready()
        sm2_port = int(other.tunnel.wss_port)

        def sm2_in_roster() -> bool:
            roster = site.bridge.router.upstream.registered.get("roster") or []
            return any(e.get("name") == "sm2" and e.get("available") for e in roster)

        yield poll(reactor, sm2_in_roster, "sm2 in sm1's roster")
        proxy = yield start_proxy(
            reactor,
            work,
            site.pki.ca.parent,
            {n: "127.0.0.1,localhost" for n in ("cic1", "sm1", "sm2")},
            PAIR_BASE_MAP,
            {},
            site.wss_port,
            nginx=need_binary(NGINX, "nginx"),
            session_ports={"edge2": sm2_port},
        )
    except BaseException:
        if other is not None:
            yield defer.maybeDeferred(other.stopService)
        yield site.stop()
        raise
    return ProxiedPair(site, other, proxy)
