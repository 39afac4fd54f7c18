"""``twistd notifier``: the reference Notifier on its own.

    twistd -n notifier --demo
    twistd -n notifier --site deploy/site.example.yaml --port 5597 \\
        --cert notifier.pem --ca ca.pem --control tcp:8090:interface=127.0.0.1 \\
        --http-port 8018 --https-port 8019 --resources /srv/cic-files

Options are checked in ``postOptions`` (the site file is loaded there, so a bad
file stops twistd with a message naming the field) and frozen into a
:class:`NotifierConfig`. ``makeService`` does no I/O: the certificates are read,
or created under the work path, when the link starts listening.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.application.service import IService
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.internet.ssl import CertificateOptions
from twisted.python import usage
from zope.interface import implementer

from smbridge import pki
from smbridge.notifier.demo import demo_site
from smbridge.notifier.service import NotifierService
from smbridge.notifier.site import Site, SiteError, load_site
from smbridge.notifier.trust import CertificateTrust
from smbridge.usage_errors import exit_on_usage_error, name_coercion_errors, under_twistd


@dataclass(frozen=True)
class NotifierConfig:
    site: Site
    port: int
    interface: str
    control: str | None  # endpoint string, None when disabled
    cert: Path | None  # server identity (key + certificate PEM); None: generated PKI
    ca: Path | None  # CA that signs bridges' client certificates
    work_path: Path
    http_port: int | None = None  # resource host, HTTP (the CIC server's 8018); None: off
    https_port: int | None = None  # resource host, HTTPS (8019); None: off
    resources: Path | None = None  # directory served there; None: the built-in demo files
    role: str | None = None  # primary/backup of a pair; None: the site file's cic.role
    peer: str | None = None  # the other Notifier's link address (HOST:PORT)
    peer_control: str | None = None  # the other Notifier's control API URL
    detection: float = 5.0  # seconds of peer silence before a backup takes over
    probe_timeout: float | None = None  # seconds one probe may take; None: min(2, detection/2)
    cic_name: str | None = None  # this CIC server's name (default: the site's cic.name)
    trust_any: bool = False  # accept every bridge certificate the CA signed
    trust_store: Path | None = None  # trusted/new bridge certificates; None: WORK/trust.json
    roster_store: Path | None = None  # the roster kept across restarts; None: WORK/roster-CIC.json
    trusted: tuple[Path, ...] = ()  # bridge certificates (PEM) trusted from the start
    imported_cas: tuple[Path, ...] = ()  # more authorities bridges' certificates may chain to

    def certificate_trust(self) -> CertificateTrust | None:
        """The trust store; with a generated PKI its own bridge certificate is trusted."""
        if self.trust_any:
            return None
        files = list(self.trusted)
        if self.cert is None:
            files.append(pki.SitePKI.in_dir(self.work_path / "pki").bridge_client)
        return CertificateTrust(self.trust_store or self.work_path / "trust.json", (), files)

    def roster_file(self) -> Path:
        """Where the roster is kept; named after the CIC server, so a pair may share WORK."""
        if self.roster_store is not None:
            return self.roster_store
        return self.work_path / f"roster-{self.cic_name or self.site.cic.name}.json"

    def tls_options(self) -> CertificateOptions:
        """Read the link's TLS options, creating the site PKI first when no --cert was given."""
        if self.cert is not None and self.ca is not None:
            return pki.server_options(self.cert, self.ca, self.imported_cas)
        site_pki = pki.ensure_site_pki(self.work_path / "pki")
        return pki.server_options(site_pki.notifier, site_pki.ca, self.imported_cas)

    def resource_tls_options(self) -> CertificateOptions:
        """The HTTPS resource port's TLS options: the same identity, no client certificate."""
        if self.cert is not None:
            return pki.server_options(self.cert)
        return pki.server_options(pki.ensure_site_pki(self.work_path / "pki").notifier)


def _port_or_off(value: str) -> int | None:
    if value.strip().lower() in ("off", "none"):
        return None
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} outside 0..65535")
    return port


_port_or_off.coerceDoc = "A TCP port, 0..65535 (0: any free port), or 'off'."  # type: ignore[attr-defined]


class Options(usage.Options):
    optFlags = [
        ["demo", None, "Use the built-in demo site (password 'demo' for every user)."],
        ["trust-any", None, "Accept every bridge certificate the CA signed (no trust store)."],
    ]
    optParameters = [
        ["site", None, None, "Site file (YAML, see docs/site-file.md); required unless --demo."],
        ["port", "p", 5597, "TCP port of the bridge link (TLS with client certificates).", int],
        ["interface", None, "", "Interface of the bridge link (default: all)."],
        [
            "control",
            None,
            "tcp:8090:interface=127.0.0.1",
            "Endpoint of the HTTP control API, or 'none' to disable it.",
        ],
        [
            "http-port",
            None,
            8018,
            "HTTP port of the resource host (status icons, response files), or 'off'.",
            _port_or_off,
        ],
        ["https-port", None, 8019, "HTTPS port of the resource host, or 'off'.", _port_or_off],
        ["resources", None, None, "Directory the resource host serves (default: demo files)."],
        ["role", None, None, "primary or backup in a switchover pair (default: the site's)."],
        ["trust-store", None, None, "JSON file of trusted bridge certificates (WORK/trust.json)."],
        [
            "roster-store",
            None,
            None,
            "JSON file keeping the roster and retirements (WORK/roster-CIC.json).",
        ],
        ["cic-name", None, None, "This CIC server's name (default: the site file's cic.name)."],
        ["peer", None, None, "HOST:PORT of the other Notifier's link (a switchover pair)."],
        [
            "peer-control",
            None,
            None,
            "URL of the other Notifier's control API (http://HOST:PORT), told about switchovers.",
        ],
        [
            "detection",
            None,
            5.0,
            "Seconds the backup waits for a silent primary before it takes over.",
            float,
        ],
        [
            "probe-timeout",
            None,
            None,
            "Seconds one liveness probe of the peer (GET /api/ping on --peer-control) may take "
            "before it counts as unanswered (default: half of --detection, at most 2).",
            float,
        ],
        ["cert", None, None, "Server certificate and key (PEM) for the link."],
        ["ca", None, None, "CA certificate (PEM) that bridges' client certificates must chain to."],
        [
            "work-path",
            None,
            "smbridge-work",
            "Working directory; the site PKI is generated under WORK/pki when --cert is not given.",
        ],
    ]

    config: NotifierConfig

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        name_coercion_errors(self)  # "--port: 'abc' is not a whole number"
        self.trusted: list[Path] = []
        self.imported_cas: list[Path] = []

    def opt_import_ca(self, value: str) -> None:
        """A custom certificate authority (PEM) bridges' certificates may chain to (repeatable)."""
        if not Path(value).is_file():
            raise usage.UsageError(f"--import-ca {value}: no such file")
        self.imported_cas.append(Path(value))

    def opt_trust(self, value: str) -> None:
        """A bridge certificate (PEM) to trust from the start (repeatable)."""
        if not Path(value).is_file():
            raise usage.UsageError(f"--trust {value}: no such file")
        self.trusted.append(Path(value))

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Under twistd a refused option ends the process with its one-line reason (status 2)."""
        try:
            super().parseOptions(options)  # type: ignore[no-untyped-call]
        except usage.UsageError as e:
            if not under_twistd(self):
                raise
            exit_on_usage_error("twistd notifier", e)

    def postOptions(self) -> None:
        if self["demo"] and self["site"]:
            raise usage.UsageError("give either --site or --demo, not both")
        if not self["demo"] and not self["site"]:
            raise usage.UsageError("--site FILE is required (or --demo for the demo site)")
        if not 0 <= self["port"] <= 65535:
            raise usage.UsageError(f"--port {self['port']} is not a TCP port")
        if (self["cert"] is None) != (self["ca"] is None):
            raise usage.UsageError(
                "--cert and --ca go together (or give neither to use --work-path)"
            )
        for flag in ("cert", "ca"):
            if self[flag] is not None and not Path(self[flag]).is_file():
                raise usage.UsageError(f"--{flag} {self[flag]}: no such file")
        if self["resources"] is not None and not Path(self["resources"]).is_dir():
            raise usage.UsageError(f"--resources {self['resources']}: no such directory")
        try:
            site = demo_site() if self["demo"] else load_site(self["site"])
        except SiteError as e:
            raise usage.UsageError(str(e)) from e
        if self["role"] is not None and self["role"] not in ("primary", "backup"):
            raise usage.UsageError("--role must be primary or backup")
        if self["peer"] is not None:
            from smbridge.notifier.peer import split_address

            try:
                split_address(self["peer"])
            except ValueError as e:
                raise usage.UsageError(f"--peer: {e}") from None
        if self["peer-control"] is not None and self["peer"] is None:
            raise usage.UsageError("--peer-control needs --peer")
        if not 0.1 <= self["detection"] <= 3600:
            raise usage.UsageError("--detection must be 0.1..3600 seconds")
        if self["probe-timeout"] is not None and not (
            0.05 <= self["probe-timeout"] <= self["detection"]
        ):
            raise usage.UsageError("--probe-timeout must be 0.05 s..--detection")
        control = self["control"]
        self.config = NotifierConfig(
            site=site,
            port=self["port"],
            interface=self["interface"],
            control=None if control.strip().lower() == "none" else control,
            cert=Path(self["cert"]) if self["cert"] else None,
            ca=Path(self["ca"]) if self["ca"] else None,
            work_path=Path(self["work-path"]),
            http_port=self["http-port"],
            https_port=self["https-port"],
            resources=Path(self["resources"]) if self["resources"] else None,
            role=self["role"],
            peer=self["peer"],
            peer_control=self["peer-control"],
            detection=self["detection"],
            probe_timeout=self["probe-timeout"],
            cic_name=self["cic-name"],
            trust_any=bool(self["trust-any"]),
            trust_store=Path(self["trust-store"]) if self["trust-store"] else None,
            roster_store=Path(self["roster-store"]) if self["roster-store"] else None,
            trusted=tuple(self.trusted),
            imported_cas=tuple(self.imported_cas),
        )


@implementer(IStreamServerEndpoint)
class LazyTLSServerEndpoint:
    """A TLS server endpoint whose certificate options are built when it starts listening."""

    def __init__(
        self, reactor: Any, port: int, interface: str, tls_options: Callable[[], CertificateOptions]
    ) -> None:
        self.reactor = reactor
        self.port = port
        self.interface = interface
        self.tls_options = tls_options

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        try:
            options = self.tls_options()
        except Exception:
            return fail()
        endpoint = SSL4ServerEndpoint(self.reactor, self.port, options, interface=self.interface)
        return endpoint.listen(factory)  # type: ignore[no-any-return]


def make_notifier_service(config: NotifierConfig, reactor: Any) -> NotifierService:
    """Build the service from a frozen config; listening starts with ``startService``."""
    try:
        control = serverFromString(reactor, config.control) if config.control else None
    except (ValueError, TypeError) as e:
        raise usage.UsageError(f"--control {config.control}: {e}") from e
    link = LazyTLSServerEndpoint(reactor, config.port, config.interface, config.tls_options)
    http = https = None
    if config.http_port is not None:
        where = f":interface={config.interface}" if config.interface else ""
        http = serverFromString(reactor, f"tcp:{config.http_port}{where}")
    if config.https_port is not None:
        https = LazyTLSServerEndpoint(
            reactor, config.https_port, config.interface, config.resource_tls_options
        )
    service = NotifierService(
        config.site,
        reactor=reactor,
        link_endpoint=link,
        control_endpoint=control,
        http_endpoint=http,
        https_endpoint=https,
        resources=config.resources,
        role=config.role,
        peer=config.peer,
        peer_control=config.peer_control,
        detection=config.detection,
        probe_interval=min(1.0, config.detection / 3),
        probe_timeout=config.probe_timeout,
        trust=config.certificate_trust(),
        roster_store=config.roster_file(),
    )
    if config.cic_name:
        service.notifier.cic_name = config.cic_name
    return service


def makeService(options: Options) -> IService:
    """The Notifier under twistd: a bad value or a port that cannot bind ends it in one line."""
    from twisted.internet import reactor

    from smbridge.listening import ExitOnListenFailure

    try:
        service = make_notifier_service(options.config, reactor)
    except usage.UsageError as e:
        exit_on_usage_error("twistd notifier", e)
    return ExitOnListenFailure(service)  # a port that cannot bind: exit 1, one line
