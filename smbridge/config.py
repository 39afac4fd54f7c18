"""The bridge's typed, frozen configuration, built once from the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

from smbridge.codec.frames import DEFAULT_MAX_FRAME
from smbridge.router.router import BridgeIdentity
from smbridge.router.throttle import ThrottleSettings
from smbridge.session.negotiate import TimeoutPolicy

LINK_MAX_FRAME = 16 << 20  # frames from the Notifier: directories and rosters can be large
NOTIFIER_PORT = 5597
CLIENT_PORT = 3952
WS_PORT = 8951
WSS_PORT = 8952


@dataclass(frozen=True)
class NotifierAddress:
    host: str
    port: int = NOTIFIER_PORT

    @classmethod
    def parse(cls, text: str) -> NotifierAddress:
        """Parse ``HOST``, ``HOST:PORT`` or ``[V6]:PORT``; ValueError says what is wrong."""
        text = text.strip()
        if not text:
            raise ValueError("empty Notifier address")
        port: str | None = None
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise ValueError(f"bad IPv6 Notifier address {text!r}: use [ADDR]:PORT")
            port = rest[1:] or None
        elif text.count(":") == 1:
            host, port = text.split(":")
        else:
            host = text
        if not host:
            raise ValueError(f"no host in Notifier address {text!r}")
        if port is None:
            return cls(host)
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad port {port!r} in Notifier address {text!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class TLSFiles:
    """PEM files: the listener's identity, ours toward the Notifier, and the CA we trust."""

    cert: Path
    client_cert: Path
    ca: Path


@dataclass(frozen=True)
class TunnelSettings:
    """The WebSocket tunnel's behaviour (docs/tunnel.md)."""

    require_client_type: bool = True  # refuse handshakes without ININ-Client-Type (403)
    ping_interval: float = 20.0  # seconds between pings; 0 turns them off
    ping_timeout: float = 20.0  # no pong within this: the connection is dropped
    open_timeout: float = 10.0  # the opening handshake must finish within this (--upgrade-timeout)
    close_timeout: float = 5.0  # the closing handshake, likewise
    # Proxies whose X-SSL-Client-Cert / -Verify headers are believed (--trusted-proxy;
    # transports/client_certs.py); from anyone else they are ignored and logged.
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()


@dataclass(frozen=True)
class BridgeConfig:
    identity: BridgeIdentity
    tls: TLSFiles
    notifiers: tuple[NotifierAddress, ...] = (NotifierAddress("localhost"),)
    notifier_name: str | None = None  # name the Notifier's certificate must carry
    switchover_mode: str = "follow-primary"  # or "pinned": only the first --notifier
    ping_interval: float = 5.0  # seconds between load Pings to the Notifier
    high_watermark_ms: float = 500.0  # Ping round trip above this: the site is loaded...
    low_watermark_ms: float = 200.0  # ...until a round trip falls below this
    upstream_timeout: float = 10.0  # seconds a request waits for the Notifier (then unavailable)
    link_dead_after: float = 15.0  # seconds of silence with Pings out before the link is dropped
    port: int = CLIENT_PORT
    interface: str = ""
    allow_cleartext: bool = False
    policy: TimeoutPolicy = field(default_factory=TimeoutPolicy)
    max_frame: int = DEFAULT_MAX_FRAME  # largest frame taken from a client
    link_max_frame: int = LINK_MAX_FRAME  # largest frame taken from the Notifier (its own limit)
    max_watches: int = 200  # watches one session may hold (queues, users, workgroups)
    piece_bytes: int = 256 * 1024  # largest piece of a large answer to clients (codec/pieces.py)
    max_unread_seconds: float = 60.0  # a client that reads nothing this long is dropped
    max_held_bytes: int = 4 << 20  # ... or once this many bytes wait for it (docs/sender.md)
    admin_port: int | None = None  # None: no admin API (twistd smbridge defaults to 8080)
    admin_interface: str = "127.0.0.1"
    admin_token: str | None = field(default=None, repr=False)  # required off loopback
    trim_interval: float = 60.0  # seconds between handing free memory back (0: never)
    ws_port: int | None = None  # WebSocket tunnel, clear text; None: off (twistd: 8951)
    wss_port: int | None = None  # WebSocket tunnel over TLS; None: off (twistd: 8952)
    tunnel: TunnelSettings = field(default_factory=TunnelSettings)
    # Session lifecycle (docs/lifecycle.md).
    linger: float = 120.0  # seconds a dropped session waits for ResumeSession (0: none)
    user_topic_grace: float = 30.0  # seconds user:<id> stays subscribed after its last session
    replay_bytes: int = 256 * 1024  # per-session replay buffer of notifications, bytes
    session_hook: str | None = None  # dotted name of the session hook (pkg.mod.Name)
    hook_timeout: float = 5.0  # seconds the hook's create/destroy may take
    shutdown_grace: float = 5.0  # seconds a shutdown waits for clients to take their notice
    # Ports of the CIC server's Table 8 services in direct (non-tunnel) resource URIs,
    # by kind ("http", "httpsecure", ...); unnamed kinds keep Table 8's ports.
    resource_ports: dict[str, int] = field(default_factory=dict)
    # The bridge configuration file (--config) and the command line it was given with,
    # re-read by POST /api/reload and SIGHUP (docs/operations.md); None: no file.
    config_file: Path | None = None
    argv: tuple[str, ...] = ()
    # The connection guard (docs/roster.md): more than guard_limit connections within
    # guard_window seconds from untrusted addresses are refused; 0 turns it off.
    guard_limit: int = 20
    guard_window: float = 3.0
    # ...per source address (an IPv6 /64); all sources together: guard_global_limit.
    guard_global_limit: int = 2000
    # The bridge's own subnets (trusted); None: loopback plus the connected networks
    # of the listening interface, read from the host at start.
    own_subnets: tuple[IPv4Network | IPv6Network, ...] | None = None
    # Logon throttling (docs/protocol.md §4.1, smbridge/router/throttle.py): failures
    # let through per (user, address) and per address before the waits start, the
    # longest wait, the logons per address in flight at once, and the keys held at most.
    logon_free_failures: int = 5
    logon_address_free_failures: int = 20
    logon_max_delay: float = 60.0
    logon_address_max_pending: int = 512
    logon_throttle_entries: int = 100_000
    # Before logon (docs/operations.md, "Strangers before logon"): the TLS handshake
    # and the first CreateSession/ResumeSession must each come within their time (the
    # WebSocket upgrade's is tunnel.open_timeout), and frames are at most this large.
    handshake_timeout: float = 10.0
    logon_timeout: float = 30.0
    prelogon_max_frame: int = 64 * 1024
    # Descriptors kept free under RLIMIT_NOFILE: the client listeners stop accepting
    # before fewer are left (0: no reserve).
    fd_reserve: int = 64
    # The listen backlog of the client port, ws and wss: connections the kernel holds
    # completed but not yet accepted (capped by net.core.somaxconn; docs/operations.md).
    backlog: int = 4096
    # TLS session resumption on the client port and wss (docs/tunnel.md): the ticket key
    # is replaced every this many seconds (a ticket lives as long); 0 turns it off.
    tls_ticket_rotation: float = 3600.0
    # Certificate logon (docs/client.md): the CA(s) whose client certificates log on
    # (None: no certificate is asked for) and the CRL file, re-read when it changes.
    client_ca: Path | None = None
    client_crl: Path | None = None
    # Several bridge processes on one host (docs/operations.md, "Workers"): the
    # supervisor's --workers; a worker's own place (index of count, set by --worker);
    # and the directory of the workers' private sockets.
    workers: int = 1
    worker_index: int = 0
    worker_count: int = 1
    run_dir: Path | None = None

    @property
    def logon_throttle(self) -> ThrottleSettings:
        """The logon throttle's settings, from the ``--logon-*`` options."""
        return ThrottleSettings(
            free_failures=self.logon_free_failures,
            address_free_failures=self.logon_address_free_failures,
            max_delay=self.logon_max_delay,
            max_entries=self.logon_throttle_entries,
            address_max_pending=self.logon_address_max_pending,
        )

    @property
    def notifier(self) -> NotifierAddress:
        """The first Notifier given (the pinned one in ``pinned`` mode)."""
        return self.notifiers[0]
