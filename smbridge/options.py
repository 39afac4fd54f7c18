"""The bridge's command-line options (``twistd smbridge``) and the configuration they build.

``Options`` checks the command line (and ``--config FILE``) and builds a frozen
:class:`~smbridge.config.BridgeConfig`; :func:`parse` does that for one ``argv``. The
tap runs it at start and the service hands :func:`parse` to the admin layer, so a
reload parses exactly as the start did. Below the service: it imports neither the
service, the demo nor the tap (``smbridge.tap`` re-exports ``Options``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.python import usage

from smbridge.bridge_config import OptionNames, config_path, load
from smbridge.codec.frames import DEFAULT_MAX_FRAME
from smbridge.config import BridgeConfig, NotifierAddress, TLSFiles, TunnelSettings
from smbridge.option_table import FLAGS, PARAMETERS, port_number, port_or_off, yes_no
from smbridge.router.router import BridgeIdentity
from smbridge.session.negotiate import TimeoutPolicy
from smbridge.usage_errors import describe, exit_on_usage_error, name_coercion_errors, under_twistd

KINDS = ("on-server", "off-server")
describe(port_number, "a port number (0..65535)")


def demo_tls(work_path: Path) -> TLSFiles:
    """The demo's PEM files under ``<work path>/pki`` (also the defaults without --demo)."""
    from smbridge import pki  # cryptography and OpenSSL: only when the options are checked

    files = pki.SitePKI.in_dir(work_path / "pki")
    return TLSFiles(cert=files.bridge, client_cert=files.bridge_client, ca=files.ca)


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run the smbridge Session Manager. With --demo, also run an embedded reference "
        "Notifier with a demo site (users agent1..agent50, supervisor1; password 'demo')."
    )
    optFlags = FLAGS
    optParameters = PARAMETERS

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        name_coercion_errors(self)  # "--port: 'abc' is not a port number (0..65535)"
        self.notifiers: list[NotifierAddress] = []
        self.resource_ports: dict[str, int] = {}
        self.own_subnets: list[Any] = []
        self.trusted_proxies: list[Any] = []
        self.config: BridgeConfig | None = None
        self.argv: tuple[str, ...] = ()  # the command line as given (reload re-parses it)

    def opt_own_subnet(self, value: str) -> None:
        """ADDR/PREFIX trusted by the connection guard (repeatable; default: the host's)."""
        from smbridge.transports.guard import parse_subnet

        try:
            self.own_subnets.append(parse_subnet(value))
        except ValueError as e:
            raise usage.UsageError(f"--own-subnet: {e}") from None

    def opt_trusted_proxy(self, value: str) -> None:
        """ADDR[/PREFIX] of a proxy whose client-certificate headers are believed (repeatable)."""
        from smbridge.transports.guard import parse_subnet

        try:
            self.trusted_proxies.append(parse_subnet(value))
        except ValueError as e:
            raise usage.UsageError(f"--trusted-proxy: {e}") from None

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Parse ``--config FILE``'s options first, then the command line (which wins).

        Under twistd a refused option ends the process with its one-line reason
        (exit status 2); elsewhere (a reload) the ``UsageError`` is raised.
        """
        try:
            self._parse(options)
        except usage.UsageError as e:
            if not under_twistd(self):
                raise
            exit_on_usage_error("twistd smbridge", e)

    def _parse(self, options: list[str] | None) -> None:
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
            number = port_number(port)
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
        if not 4096 <= self["piece-bytes"] <= DEFAULT_MAX_FRAME - 14:
            raise usage.UsageError(
                f"--piece-bytes must be 4096..{DEFAULT_MAX_FRAME - 14} "
                "(a piece and its header within the frame limit every client accepts)"
            )
        if not 1 <= self["max-unread-seconds"] <= 3600:
            raise usage.UsageError("--max-unread-seconds must be 1..3600")
        if not 65536 <= self["max-held-bytes"] <= 1 << 30:
            raise usage.UsageError("--max-held-bytes must be 65536..1073741824")
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError("--log-format must be text or json")
        if self["log-level"] not in ("debug", "info", "warn", "error", "critical"):
            raise usage.UsageError(
                "--log-level must be debug, info, warn, error or critical,"
                f" not {self['log-level']!r}"
            )
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
            self[flag] = port_or_off(f"--{flag}", self[flag])
        self["require-client-type"] = yes_no("--require-client-type", self["require-client-type"])
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
        worker_index, worker_count = self._check_workers()
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
            piece_bytes=self["piece-bytes"],
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
                trusted_proxies=tuple(getattr(self, "trusted_proxies", ())),
            ),
            resource_ports=dict(self.resource_ports),
            config_file=Path(self["config"]).resolve() if self["config"] else None,
            argv=getattr(self, "argv", ()),
            guard_limit=self["guard-limit"],
            guard_window=self["guard-window"],
            guard_global_limit=self["guard-global-limit"],
            tls_ticket_rotation=self["tls-ticket-rotation"],
            client_ca=self._client_file("client-ca"),
            client_crl=self._client_file("client-crl"),
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
            backlog=self["backlog"],
            workers=self["workers"],
            worker_index=worker_index,
            worker_count=worker_count,
            run_dir=Path(self["run-dir"]).resolve() if self["run-dir"] else work.resolve() / "run",
            linger=self["linger"],
            user_topic_grace=self["user-topic-grace"],
            replay_bytes=self["replay-bytes"],
            session_hook=self["session-hook"],
            hook_timeout=self["hook-timeout"],
            shutdown_grace=self["shutdown-grace"],
        )

    def _client_file(self, flag: str) -> Path | None:
        """--client-ca / --client-crl: an existing file (certificate logon), or None."""
        if not self[flag]:
            return None
        path = Path(self[flag]).resolve()
        if not path.is_file():
            raise usage.UsageError(f"--{flag}: no such file {path}")
        if flag == "client-crl" and not self["client-ca"]:
            raise usage.UsageError("--client-crl needs --client-ca")
        from smbridge.transports.client_certs import readable

        problem = readable(path, crl=flag == "client-crl")
        if problem:
            raise usage.UsageError(f"--{flag}: {path}: {problem}")
        return path

    def _check_workers(self) -> tuple[int, int]:
        """--workers (1..64) and the supervisor's --worker I/N: (index, count)."""
        if not 1 <= self["workers"] <= 64:
            raise usage.UsageError(f"--workers must be 1..64 processes, not {self['workers']}")
        if self["worker"] is None:
            return 0, 1
        index, _, count = str(self["worker"]).partition("/")
        try:
            i, n = int(index), int(count)
        except ValueError:
            raise usage.UsageError(
                f"--worker: expected I/N (worker I of N), not {self['worker']!r}"
            ) from None
        if not 0 <= i < n <= 64:
            raise usage.UsageError(f"--worker {self['worker']}: need 0 <= I < N <= 64")
        return i, n

    def _check_prelogon(self) -> None:
        """Deadlines and bounds before logon (docs/operations.md)."""
        for flag in ("handshake-timeout", "upgrade-timeout", "logon-timeout"):
            if not 0.1 <= self[flag] <= 3600:
                raise usage.UsageError(f"--{flag} must be 0.1..3600 seconds")
        if not 1024 <= self["prelogon-max-frame"] <= 1 << 30:
            raise usage.UsageError("--prelogon-max-frame must be 1024..1073741824 bytes")
        if not 0 <= self["fd-reserve"] <= 65536:
            raise usage.UsageError("--fd-reserve must be 0..65536")
        if not 1 <= self["backlog"] <= 65535:
            raise usage.UsageError(
                f"--backlog must be 1..65535 pending connections, not {self['backlog']}"
            )

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
        if not 0 <= self["user-topic-grace"] <= 3600:
            raise usage.UsageError("--user-topic-grace must be 0..3600 seconds")
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


def parse(argv: list[str] | Sequence[str]) -> BridgeConfig:
    """The configuration ``argv`` describes, as at start (the reload's :data:`Parse`).

    A ``--config`` file is checked on its own first, so that its errors raise
    ``BridgeConfigError`` naming the key; a refused option raises ``usage.UsageError``.
    """
    options = Options()
    path = config_path(argv)
    if path is not None:
        load(Path(path), OptionNames.of(options))
    options.parseOptions(list(argv))
    assert options.config is not None
    return options.config
