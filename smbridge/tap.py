"""``twistd smbridge``: command-line options and the service they describe."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from smbridge.codec.frames import DEFAULT_MAX_FRAME
from smbridge.config import (
    CLIENT_PORT,
    LINK_MAX_FRAME,
    WS_PORT,
    WSS_PORT,
    BridgeConfig,
    NotifierAddress,
    TLSFiles,
    TunnelSettings,
)
from smbridge.router.router import BridgeIdentity
from smbridge.session.negotiate import TimeoutPolicy

KINDS = ("on-server", "off-server")


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} outside 0..65535")
    return port


_port.coerceDoc = "A TCP port, 0..65535."  # type: ignore[attr-defined]


def _port_or_off(flag: str, value: object) -> int | None:
    """A port option that also takes ``off``; 0 means any free port."""
    text = str(value).strip().lower()
    if text in ("off", "none"):
        return None
    try:
        return _port(text)
    except ValueError:
        raise usage.UsageError(
            f"{flag}: expected a port 0..65535 or 'off', not {value!r}"
        ) from None


def _yes_no(flag: str, value: object) -> bool:
    text = str(value).strip().lower()
    if text in ("yes", "on", "true", "1"):
        return True
    if text in ("no", "off", "false", "0"):
        return False
    raise usage.UsageError(f"{flag}: expected yes or no, not {value!r}")


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run the smbridge Session Manager. With --demo, also run an embedded reference "
        "Notifier with a demo site (users agent1..agent50, supervisor1; password 'demo')."
    )
    optFlags = [
        ["demo", None, "run with an embedded reference Notifier and a demo site"],
        ["allow-cleartext", None, "accept clear-text clients on the client port (off: TLS only)"],
    ]
    optParameters = [
        ["port", "p", CLIENT_PORT, "client listener port (TLS and clear text)", _port],
        [
            "interface",
            None,
            None,
            "address to bind the client listener (all; 127.0.0.1 with --demo)",
        ],
        ["name", None, None, "this bridge's node name (default: the short host name)"],
        ["fqdn", None, None, "the name clients use for this bridge (default: the host's FQDN)"],
        ["kind", None, "off-server", "on-server or off-server"],
        ["location", None, "", "this bridge's location"],
        ["accept", None, "default", "accept mode: default, all or maintenance (docs/roster.md)"],
        ["cert", None, None, "PEM file with the listener's certificate and key"],
        ["client-cert", None, None, "PEM file with the certificate and key toward the Notifier"],
        ["ca", None, None, "PEM file of the CA that signed the Notifier's certificate"],
        [
            "notifier-name",
            None,
            None,
            "the name the Notifier's certificate must carry "
            "(default: the host given to --notifier)",
        ],
        [
            "switchover-mode",
            None,
            "follow-primary",
            "follow-primary (find the primary among the --notifier addresses) "
            "or pinned (stay with the first --notifier)",
        ],
        ["ping-interval", None, 5.0, "seconds between load Pings to the Notifier", float],
        [
            "high-watermark",
            None,
            500.0,
            "Ping round trip (ms) above which the site counts as loaded",
            float,
        ],
        [
            "low-watermark",
            None,
            200.0,
            "Ping round trip (ms) under which a loaded site is no longer loaded",
            float,
        ],
        [
            "upstream-timeout",
            None,
            10.0,
            "seconds a request to the Notifier may wait for its answer (then upstream-unavailable)",
            float,
        ],
        [
            "link-dead-after",
            None,
            15.0,
            "seconds of silence, with Pings unanswered, after which the Notifier link is dropped",
            float,
        ],
        ["work-path", None, "./smbridge-work", "state directory (certificates under pki/)"],
        ["session-timeout", None, 1800, "configured session timeout T, seconds", int],
        [
            "session-timeout-floor",
            None,
            60,
            "smallest session timeout a client may ask, seconds",
            int,
        ],
        ["max-frame", None, DEFAULT_MAX_FRAME, "largest frame accepted from a client, bytes", int],
        [
            "link-max-frame",
            None,
            LINK_MAX_FRAME,
            "largest frame accepted from the Notifier, bytes (at least the protocol's 1048576)",
            int,
        ],
        ["max-watches", None, 200, "watches one session may hold", int],
        ["max-unread-seconds", None, 60.0, "drop a client that reads nothing this long", float],
        [
            "max-held-bytes",
            None,
            4 << 20,
            "drop a client that stopped reading once this many bytes wait for it",
            int,
        ],
        ["admin-port", None, "8080", "admin API port (or 'off')"],
        [
            "admin-interface",
            None,
            "127.0.0.1",
            "admin API address; off loopback a token is required",
        ],
        [
            "admin-token-file",
            None,
            None,
            "file holding the admin API bearer token (or set SMBRIDGE_ADMIN_TOKEN)",
        ],
        ["trim-interval", None, 60.0, "seconds between giving free memory back (0: never)", float],
        ["ws-port", None, str(WS_PORT), "WebSocket tunnel port, clear text (or 'off')"],
        ["wss-port", None, str(WSS_PORT), "WebSocket tunnel port over TLS (or 'off')"],
        [
            "require-client-type",
            None,
            "yes",
            "tunnel: refuse handshakes without an ININ-Client-Type header (yes/no)",
        ],
        ["ws-ping-interval", None, 20.0, "tunnel: seconds between pings (0: none)", float],
        ["linger", None, 120.0, "seconds a dropped session waits for ResumeSession", float],
        ["replay-bytes", None, 256 * 1024, "per-session replay buffer, bytes", int],
        ["session-hook", None, None, "session hook by dotted name (pkg.module.Name)"],
        ["hook-timeout", None, 5.0, "seconds the session hook may take to answer", float],
        ["shutdown-grace", None, 5.0, "seconds a shutdown waits for clients to close", float],
        [
            "guard-limit",
            None,
            20,
            "connection guard: untrusted connections let in per window (0: guard off)",
            int,
        ],
        ["guard-window", None, 3.0, "connection guard: the window, seconds", float],
        [
            "logon-free-failures",
            None,
            5,
            "failed logons per user and address before each next one waits (1 s, 2 s, ...)",
            int,
        ],
        [
            "logon-address-free-failures",
            None,
            20,
            "failed logons per address (any user) before each next one waits",
            int,
        ],
        [
            "logon-max-delay",
            None,
            60.0,
            "longest wait between failed logons, seconds; one failure is forgotten per this",
            float,
        ],
        [
            "logon-address-max-pending",
            None,
            512,
            "logons per address let through and not yet answered (one once past its free failures)",
            int,
        ],
        ["logon-throttle-entries", None, 100_000, "logon throttle: keys held at most", int],
        [
            "guard-global-limit",
            None,
            2000,
            "connection guard: untrusted connections let in per window from all sources",
            int,
        ],
        [
            "handshake-timeout",
            None,
            10.0,
            "seconds a new connection has to finish its TLS handshake (then it is closed)",
            float,
        ],
        [
            "upgrade-timeout",
            None,
            10.0,
            "tunnel: seconds for the WebSocket opening handshake (after TLS on wss)",
            float,
        ],
        [
            "logon-timeout",
            None,
            30.0,
            "seconds for the first successful CreateSession/ResumeSession after the handshake",
            float,
        ],
        [
            "prelogon-max-frame",
            None,
            64 * 1024,
            "largest frame accepted from a client before it logs on, bytes",
            int,
        ],
        [
            "fd-reserve",
            None,
            64,
            "file descriptors kept free: the client listeners pause before fewer are left "
            "(0: no reserve)",
            int,
        ],
        [
            "tls-ticket-rotation",
            None,
            3600.0,
            "TLS session tickets: seconds between key rotations (0: no resumption)",
            float,
        ],
        ["config", None, None, "the bridge configuration file (YAML; docs/operations.md)"],
        ["log-format", None, "text", "log format: text or json (one JSON object per line)"],
        ["notifier-port", None, 5597, "--demo: the embedded Notifier's link port", _port],
        ["control-port", None, 8090, "--demo: the embedded Notifier's control API port", _port],
        [
            "notifier-http-port",
            None,
            "8018",
            "--demo: the embedded Notifier's HTTP resource port (or 'off')",
        ],
        [
            "notifier-https-port",
            None,
            "8019",
            "--demo: the embedded Notifier's HTTPS resource port (or 'off')",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.notifiers: list[NotifierAddress] = []
        self.resource_ports: dict[str, int] = {}
        self.own_subnets: list[Any] = []
        self.config: BridgeConfig | None = None
        self.argv: tuple[str, ...] = ()  # the command line as given (reload re-parses it)

    def opt_own_subnet(self, value: str) -> None:
        """ADDR/PREFIX trusted by the connection guard (repeatable; default: the host's)."""
        from smbridge.transports.guard import parse_subnet

        try:
            self.own_subnets.append(parse_subnet(value))
        except ValueError as e:
            raise usage.UsageError(f"--own-subnet: {e}") from None

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Parse ``--config FILE``'s options first, then the command line (which wins)."""
        import sys

        from smbridge.bridge_config import BridgeConfigError, OptionNames, expand

        argv = list(sys.argv[1:] if options is None else options)
        self.argv = tuple(argv)
        try:
            expanded = expand(argv, OptionNames.of(self))
        except BridgeConfigError as e:
            raise usage.UsageError(f"--config: {e.message}") from None
        super().parseOptions(expanded)  # type: ignore[no-untyped-call]

    def opt_notifier(self, value: str) -> None:
        """A Notifier HOST[:PORT] (repeatable; default localhost:5597)."""
        try:
            self.notifiers.append(NotifierAddress.parse(value))
        except ValueError as e:
            raise usage.UsageError(f"--notifier: {e}") from None

    def opt_resource_port(self, value: str) -> None:
        """KIND=PORT: a Table 8 port in direct resource URIs (repeatable; e.g. httpsecure=8019)."""
        from smbridge.tunnel.uris import KINDS

        kind, sep, port = value.partition("=")
        if not sep or kind not in KINDS:
            raise usage.UsageError(
                f"--resource-port {value!r}: expected KIND=PORT, KIND one of {', '.join(KINDS)}"
            )
        try:
            number = _port(port)
        except ValueError:
            raise usage.UsageError(f"--resource-port {value!r}: bad port {port!r}") from None
        if number == 0:
            raise usage.UsageError(f"--resource-port {value!r}: the port cannot be 0")
        self.resource_ports[kind] = number

    def postOptions(self) -> None:
        if self["kind"] not in KINDS:
            raise usage.UsageError(
                f"--kind must be one of {', '.join(KINDS)}, not {self['kind']!r}"
            )
        if self["accept"] not in ("default", "all", "maintenance"):
            raise usage.UsageError("--accept must be default, all or maintenance")
        if self["switchover-mode"] not in ("follow-primary", "pinned"):
            raise usage.UsageError("--switchover-mode must be follow-primary or pinned")
        if not 0.1 <= self["ping-interval"] <= 3600:
            raise usage.UsageError("--ping-interval must be 0.1..3600 seconds")
        if not 0 < self["low-watermark"] <= self["high-watermark"]:
            raise usage.UsageError("the watermarks need 0 < --low-watermark <= --high-watermark")
        for flag in ("upstream-timeout", "link-dead-after"):
            if not 0.1 <= self[flag] <= 3600:
                raise usage.UsageError(f"--{flag} must be 0.1..3600 seconds")
        if self["max-watches"] < 1:
            raise usage.UsageError("--max-watches must be at least 1")
        if not 1 <= self["max-unread-seconds"] <= 3600:
            raise usage.UsageError("--max-unread-seconds must be 1..3600")
        if not 65536 <= self["max-held-bytes"] <= 1 << 30:
            raise usage.UsageError("--max-held-bytes must be 65536..1073741824")
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError("--log-format must be text or json")
        if self["max-frame"] < 1024:
            raise usage.UsageError("--max-frame must be at least 1024 bytes")
        if not DEFAULT_MAX_FRAME <= self["link-max-frame"] <= 1 << 30:
            raise usage.UsageError(
                f"--link-max-frame must be {DEFAULT_MAX_FRAME}..{1 << 30} bytes "
                "(the Notifier may send frames up to the protocol's default)"
            )
        for flag in (
            "ws-port",
            "wss-port",
            "notifier-http-port",
            "notifier-https-port",
            "admin-port",
        ):
            self[flag] = _port_or_off(f"--{flag}", self[flag])
        self["require-client-type"] = _yes_no("--require-client-type", self["require-client-type"])
        if not 0 <= self["ws-ping-interval"] <= 3600:
            raise usage.UsageError("--ws-ping-interval must be 0..3600 seconds")
        if self["guard-limit"] < 0:
            raise usage.UsageError("--guard-limit must be 0 (off) or more")
        if not 0.1 <= self["guard-window"] <= 3600:
            raise usage.UsageError("--guard-window must be 0.1..3600 seconds")
        if not 1 <= self["guard-global-limit"] <= 100_000:
            raise usage.UsageError("--guard-global-limit must be 1..100000")
        if not (self["tls-ticket-rotation"] == 0 or 60 <= self["tls-ticket-rotation"] <= 86400):
            raise usage.UsageError("--tls-ticket-rotation must be 0 (off) or 60..86400 seconds")
        self._check_lifecycle()
        self._check_throttle()
        self._check_prelogon()
        try:
            policy = TimeoutPolicy(self["session-timeout"], self["session-timeout-floor"])
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        work = Path(self["work-path"])
        demo = bool(self["demo"])
        if demo and self.notifiers:
            raise usage.UsageError("--demo runs its own Notifier; leave out --notifier")
        tls = self._tls_files(work, demo)
        interface = self["interface"]
        if interface is None:
            interface = "127.0.0.1" if demo else ""
        host = socket.gethostname()
        identity = BridgeIdentity(
            # The demo site's roster lists this bridge as "bridge1".
            name=self["name"] or ("bridge1" if demo else host.split(".")[0]),
            fqdn=self["fqdn"] or ("localhost" if demo else socket.getfqdn()),
            kind=self["kind"],
            location=self["location"],
            ports={"tls": self["port"], "ws": self["ws-port"], "wss": self["wss-port"]},
            accept=self["accept"],
        )
        self.config = BridgeConfig(
            identity=identity,
            tls=tls,
            notifiers=tuple(self.notifiers) or (NotifierAddress("localhost"),),
            notifier_name=self["notifier-name"],
            switchover_mode=self["switchover-mode"],
            ping_interval=self["ping-interval"],
            high_watermark_ms=self["high-watermark"],
            low_watermark_ms=self["low-watermark"],
            upstream_timeout=self["upstream-timeout"],
            link_dead_after=self["link-dead-after"],
            port=self["port"],
            interface=interface,
            allow_cleartext=bool(self["allow-cleartext"]),
            policy=policy,
            max_frame=self["max-frame"],
            link_max_frame=self["link-max-frame"],
            max_watches=self["max-watches"],
            max_unread_seconds=self["max-unread-seconds"],
            max_held_bytes=self["max-held-bytes"],
            trim_interval=self["trim-interval"],
            admin_port=self["admin-port"],
            admin_interface=self["admin-interface"],
            admin_token=self._admin_token(),
            ws_port=self["ws-port"],
            wss_port=self["wss-port"],
            tunnel=TunnelSettings(
                require_client_type=self["require-client-type"],
                ping_interval=self["ws-ping-interval"],
                open_timeout=self["upgrade-timeout"],
            ),
            resource_ports=dict(self.resource_ports),
            config_file=Path(self["config"]).resolve() if self["config"] else None,
            argv=getattr(self, "argv", ()),
            guard_limit=self["guard-limit"],
            guard_window=self["guard-window"],
            guard_global_limit=self["guard-global-limit"],
            tls_ticket_rotation=self["tls-ticket-rotation"],
            own_subnets=tuple(self.own_subnets) or None,
            logon_free_failures=self["logon-free-failures"],
            logon_address_free_failures=self["logon-address-free-failures"],
            logon_max_delay=self["logon-max-delay"],
            logon_address_max_pending=self["logon-address-max-pending"],
            logon_throttle_entries=self["logon-throttle-entries"],
            handshake_timeout=self["handshake-timeout"],
            logon_timeout=self["logon-timeout"],
            prelogon_max_frame=min(self["prelogon-max-frame"], self["max-frame"]),
            fd_reserve=self["fd-reserve"],
            linger=self["linger"],
            replay_bytes=self["replay-bytes"],
            session_hook=self["session-hook"],
            hook_timeout=self["hook-timeout"],
            shutdown_grace=self["shutdown-grace"],
        )

    def _check_prelogon(self) -> None:
        """Deadlines and bounds before logon (docs/operations.md)."""
        for flag in ("handshake-timeout", "upgrade-timeout", "logon-timeout"):
            if not 0.1 <= self[flag] <= 3600:
                raise usage.UsageError(f"--{flag} must be 0.1..3600 seconds")
        if not 1024 <= self["prelogon-max-frame"] <= 1 << 30:
            raise usage.UsageError("--prelogon-max-frame must be 1024..1073741824 bytes")
        if not 0 <= self["fd-reserve"] <= 65536:
            raise usage.UsageError("--fd-reserve must be 0..65536")

    def _check_throttle(self) -> None:
        """Logon throttling (docs/protocol.md §4.1)."""
        if not 1 <= self["logon-free-failures"] <= 1000:
            raise usage.UsageError("--logon-free-failures must be 1..1000")
        if not 1 <= self["logon-address-free-failures"] <= 100_000:
            raise usage.UsageError("--logon-address-free-failures must be 1..100000")
        if not 1 <= self["logon-max-delay"] <= 86400:
            raise usage.UsageError("--logon-max-delay must be 1..86400 seconds")
        if not 1 <= self["logon-address-max-pending"] <= 100_000:
            raise usage.UsageError("--logon-address-max-pending must be 1..100000")
        if not 100 <= self["logon-throttle-entries"] <= 10_000_000:
            raise usage.UsageError("--logon-throttle-entries must be 100..10000000")

    def _check_lifecycle(self) -> None:
        """Linger, replay, hook and shutdown settings (docs/lifecycle.md)."""
        if not 0 <= self["linger"] <= 86400:
            raise usage.UsageError("--linger must be 0..86400 seconds")
        if not 0 <= self["replay-bytes"] <= 64 << 20:
            raise usage.UsageError("--replay-bytes must be 0..67108864")
        if not 0.1 <= self["hook-timeout"] <= 600:
            raise usage.UsageError("--hook-timeout must be 0.1..600 seconds")
        if not 0 <= self["shutdown-grace"] <= 600:
            raise usage.UsageError("--shutdown-grace must be 0..600 seconds")
        if self["session-hook"]:
            from smbridge.session.hook import load_hook

            try:
                load_hook(self["session-hook"])
            except ValueError as e:
                raise usage.UsageError(f"--session-hook: {e}") from None

    def _admin_token(self) -> str | None:
        """The admin token: from --admin-token-file or SMBRIDGE_ADMIN_TOKEN, never argv."""
        token = os.environ.get("SMBRIDGE_ADMIN_TOKEN")
        if self["admin-token-file"]:
            try:
                token = Path(self["admin-token-file"]).read_text().strip()
            except OSError as e:
                raise usage.UsageError(f"--admin-token-file: {e.strerror}") from None
        if token is not None and len(token) < 16:
            raise usage.UsageError("the admin token must be at least 16 characters")
        loopback = self["admin-interface"] in ("127.0.0.1", "::1", "localhost")
        if self["admin-port"] is not None and not loopback and not token:
            raise usage.UsageError(
                f"--admin-interface {self['admin-interface']} is not loopback: give a token "
                "with --admin-token-file or SMBRIDGE_ADMIN_TOKEN"
            )
        return token or None

    def _tls_files(self, work: Path, demo: bool) -> TLSFiles:
        from smbridge.demo import demo_tls

        default = demo_tls(work)
        if demo:
            return default
        files = TLSFiles(
            cert=Path(self["cert"]) if self["cert"] else default.cert,
            client_cert=Path(self["client-cert"]) if self["client-cert"] else default.client_cert,
            ca=Path(self["ca"]) if self["ca"] else default.ca,
        )
        for flag, path in (
            ("--cert", files.cert),
            ("--client-cert", files.client_cert),
            ("--ca", files.ca),
        ):
            if not path.is_file():
                raise usage.UsageError(f"{flag}: no such file {path} (or run with --demo)")
        return files


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from smbridge.demo import DemoConfig, DemoService
    from smbridge.service import BridgeService

    config = options.config
    assert config is not None
    r: Any = reactor
    service: IService
    if options["demo"]:
        service = DemoService(
            DemoConfig(
                config,
                Path(options["work-path"]),
                options["notifier-port"],
                options["control-port"],
                options["notifier-http-port"],
                options["notifier-https-port"],
            ),
            r,
        )
    else:
        service = BridgeService(config, r)
    from smbridge.listening import ExitOnListenFailure

    service = ExitOnListenFailure(service)  # a port that cannot bind: exit 1, one line
    if options["log-format"] == "json":
        from smbridge.logs import JSONLogging

        return JSONLogging(service)
    return service
