"""The bridge's command-line options as twistd declares them: flags, parameters, coercions.

The table :class:`smbridge.options.Options` declares (``optFlags``, ``optParameters``),
kept apart from the checks that turn it into a configuration. A ``--config`` file may
set every long name here but ``config`` (:mod:`smbridge.bridge_config`).
"""

from __future__ import annotations

from typing import Any

from twisted.python import usage

from smbridge.codec.frames import DEFAULT_MAX_FRAME
from smbridge.config import CLIENT_PORT, LINK_MAX_FRAME, WS_PORT, WSS_PORT


def port_number(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} outside 0..65535")
    return port


port_number.coerceDoc = "A TCP port, 0..65535."  # type: ignore[attr-defined]


def port_or_off(flag: str, value: object) -> int | None:
    """A port option that also takes ``off``; 0 means any free port."""
    text = str(value).strip().lower()
    if text in ("off", "none"):
        return None
    try:
        return port_number(text)
    except ValueError:
        raise usage.UsageError(
            f"{flag}: expected a port 0..65535 or 'off', not {value!r}"
        ) from None


def yes_no(flag: str, value: object) -> bool:
    text = str(value).strip().lower()
    if text in ("yes", "on", "true", "1"):
        return True
    if text in ("no", "off", "false", "0"):
        return False
    raise usage.UsageError(f"{flag}: expected yes or no, not {value!r}")


FLAGS: list[list[Any]] = [
    ["demo", None, "run with an embedded reference Notifier and a demo site"],
    ["allow-cleartext", None, "accept clear-text clients on the client port (off: TLS only)"],
]
PARAMETERS: list[list[Any]] = [
    ["port", "p", CLIENT_PORT, "client listener port (TLS and clear text)", port_number],
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
        "the name the Notifier's certificate must carry (default: the host given to --notifier)",
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
    [
        "piece-bytes",
        None,
        256 * 1024,
        "largest payload of one piece of a large answer to clients (directory pages, snapshots)",
        int,
    ],
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
    [
        "user-topic-grace",
        None,
        30.0,
        "seconds a user's own topic stays subscribed after their last session (0: none)",
        float,
    ],
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
        "backlog",
        None,
        4096,
        "listen backlog of the client port, ws and wss (the kernel caps it at net.core.somaxconn)",
        int,
    ],
    [
        "workers",
        None,
        1,
        "bridge processes on this host behind the same ports, one per core (docs/operations.md)",
        int,
    ],
    [
        "worker",
        None,
        None,
        "internal, set by the supervisor of --workers: this process is worker I of N ('I/N')",
    ],
    [
        "run-dir",
        None,
        None,
        "the workers' private sockets (default: <work-path>/run; made 0700)",
    ],
    [
        "tls-ticket-rotation",
        None,
        3600.0,
        "TLS session tickets: seconds between key rotations (0: no resumption)",
        float,
    ],
    [
        "client-ca",
        None,
        None,
        "PEM: CA(s) whose client certificates may log on without a password "
        "(off: no certificate is asked for)",
    ],
    ["client-crl", None, None, "PEM: the client CA's CRL, re-read when the file changes"],
    ["config", None, None, "the bridge configuration file (YAML; docs/operations.md)"],
    ["log-format", None, "text", "log format: text or json (one JSON object per line)"],
    [
        "log-level",
        None,
        "info",
        "the least severe events written: debug, info, warn, error or critical",
    ],
    ["notifier-port", None, 5597, "--demo: the embedded Notifier's link port", port_number],
    ["control-port", None, 8090, "--demo: the embedded Notifier's control API port", port_number],
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
