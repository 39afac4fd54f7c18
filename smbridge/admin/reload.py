"""Re-reading the bridge configuration file: ``POST /api/reload`` and SIGHUP.

The file and the command line are parsed again exactly as at start, by the option
parser the service injects (``parse``: ``smbridge.options.parse``, which ``tap``
runs too); an invalid file is refused whole and nothing changes. Otherwise every option that
can change at run time is applied to the running parts, and options that only take
effect on a restart are reported (``needsRestart``) and left as they run now, so
``bridge.config`` always describes the running bridge. No session is touched.
"""

from __future__ import annotations

import dataclasses
import re
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.python import usage

from smbridge.bridge_config import BridgeConfigError, with_config
from smbridge.config import BridgeConfig

if TYPE_CHECKING:
    from smbridge.admin.view import BridgeView, Parse

log = Logger(namespace="smbridge.admin.reload")

# BridgeConfig fields that apply at run time, with the option that sets each.
RUNTIME_KEYS: dict[str, str] = {
    "accept": "accept",
    "admin_token": "admin-token-file",
    "max_unread_seconds": "max-unread-seconds",
    "policy": "session-timeout",
    "max_watches": "max-watches",
    "ping_interval": "ping-interval",
    "high_watermark_ms": "high-watermark",
    "low_watermark_ms": "low-watermark",
    "guard_limit": "guard-limit",
    "guard_window": "guard-window",
    "guard_global_limit": "guard-global-limit",
    "linger": "linger",
    "replay_bytes": "replay-bytes",
    "max_held_bytes": "max-held-bytes",
    "shutdown_grace": "shutdown-grace",
    "handshake_timeout": "handshake-timeout",
    "logon_timeout": "logon-timeout",
    "prelogon_max_frame": "prelogon-max-frame",
    "fd_reserve": "fd-reserve",
}
# Options named after a field where the names differ (the rest: field name with dashes).
_OPTION_OF = {
    "tls": "cert",
    "notifiers": "notifier",
    "policy": "session-timeout",
    "tunnel": "require-client-type",
    "high_watermark_ms": "high-watermark",
    "low_watermark_ms": "low-watermark",
    "identity": "name",
    "admin_token": "admin-token-file",
}
_IGNORED = ("config_file", "argv")
_FLAG = re.compile(r"--([a-z][a-z-]*)")


class ReloadRefused(Exception):
    """The file (or the command line with it) is invalid: nothing was changed."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key


def option_name(field: str) -> str:
    return _OPTION_OF.get(field, field.replace("_", "-"))


def read_config(current: BridgeConfig, parse: Parse | None = None) -> BridgeConfig:
    """Parse the command line and its file again; ReloadRefused names the key if it can."""
    if current.config_file is None:
        raise ReloadRefused("the bridge was started without --config: there is nothing to re-read")
    if parse is None:
        raise ReloadRefused("this bridge was built without an option parser to re-read its file")
    try:
        return parse(with_config(current.argv, current.config_file))
    except BridgeConfigError as e:  # the file's own errors name the key exactly
        raise ReloadRefused(e.message, e.key) from None
    except usage.UsageError as e:  # a value the options refuse names its --option
        flag = _FLAG.search(str(e))
        raise ReloadRefused(str(e), flag.group(1) if flag else None) from None


def _flatten(config: BridgeConfig) -> dict[str, Any]:
    """Field -> value, with the identity's accept mode split out (it changes at run time)."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    identity = values.pop("identity")
    values["accept"] = identity.accept
    values["identity"] = dataclasses.replace(identity, accept="default", ports={})
    for name in _IGNORED:
        values.pop(name, None)
    return values


def differences(old: BridgeConfig, new: BridgeConfig) -> tuple[list[str], list[str]]:
    """(run-time fields changed, restart-only fields changed), by BridgeConfig field name."""
    a, b = _flatten(old), _flatten(new)
    changed = [k for k in b if a.get(k) != b[k]]
    return [k for k in changed if k in RUNTIME_KEYS], [k for k in changed if k not in RUNTIME_KEYS]


def _apply(bridge: BridgeView, field: str, new: BridgeConfig) -> None:
    appliers: dict[str, Callable[[], None]] = {
        "accept": lambda: bridge.router.set_accept_mode(new.identity.accept),
        "admin_token": lambda: None,  # the admin API reads bridge.config on every request
        "max_unread_seconds": lambda: setattr(
            bridge.connections, "max_unread_seconds", new.max_unread_seconds
        ),
        "policy": lambda: setattr(bridge.registry, "policy", new.policy),
        "max_watches": lambda: setattr(bridge.router.watches, "max_watches", new.max_watches),
        "ping_interval": lambda: setattr(bridge.load, "interval", new.ping_interval),
        "high_watermark_ms": lambda: setattr(bridge.load, "high_ms", new.high_watermark_ms),
        "low_watermark_ms": lambda: setattr(bridge.load, "low_ms", new.low_watermark_ms),
        "guard_limit": lambda: _guard(bridge, "limit", new.guard_limit),
        "guard_window": lambda: _guard(bridge, "window", new.guard_window),
        "guard_global_limit": lambda: _guard(bridge, "global_limit", new.guard_global_limit),
        "linger": lambda: _set(bridge.registry, "linger", new, "linger"),
        "replay_bytes": lambda: _set(bridge.registry, "replay_bytes", new, "replay_bytes"),
        "max_held_bytes": lambda: _set(bridge.connections, "max_held_bytes", new, "max_held_bytes"),
        "shutdown_grace": lambda: None,  # read from bridge.config when the bridge stops
        "handshake_timeout": lambda: _prelogon(bridge, "handshake", new.handshake_timeout),
        "logon_timeout": lambda: _prelogon(bridge, "logon", new.logon_timeout),
        "prelogon_max_frame": lambda: _prelogon(bridge, "max_frame", new.prelogon_max_frame),
        "fd_reserve": lambda: setattr(bridge.reserve, "reserve", new.fd_reserve),
    }
    appliers[field]()


def _set(target: object, name: str, config: BridgeConfig, field: str) -> None:
    setattr(target, name, getattr(config, field))


def _prelogon(bridge: BridgeView, name: str, value: Any) -> None:
    """Deadlines and the frame bound before logon: for the connections' next stage."""
    limits = bridge.connections.prelogon
    if limits is not None:
        setattr(limits, name, value)


def _guard(bridge: BridgeView, name: str, value: Any) -> None:
    guard = getattr(bridge, "guard", None)
    if guard is not None and hasattr(guard, name):
        setattr(guard, name, value)


def _shown(field: str, config: BridgeConfig) -> Any:
    """A field's value for the answer and the log (never the admin token itself)."""
    if field == "admin_token":
        return "set" if config.admin_token else "unset"
    if field == "accept":
        return config.identity.accept
    value = getattr(config, field)
    if dataclasses.is_dataclass(value):
        return {k: v for k, v in dataclasses.asdict(value).items()}  # type: ignore[arg-type]
    return value


def reload(bridge: BridgeView, parse: Parse | None, how: str = "api") -> dict[str, Any]:
    """Re-read with ``parse`` and apply; the answer lists what changed and what needs a restart.

    Raises ReloadRefused (nothing changed) for an invalid file.
    """
    old = bridge.config
    counters = bridge.router.counters
    try:
        new = read_config(old, parse)
    except ReloadRefused as e:
        counters.inc("reloads", outcome="refused")
        log.warn(
            "Reload ({how}) refused: {reason}",
            how=how,
            reason=e.message,
            key=e.key,
            event="reload.refused",
        )
        raise
    runtime, restart = differences(old, new)
    replace: dict[str, Any] = {}
    for field in runtime:
        if field == "accept":
            replace["identity"] = dataclasses.replace(old.identity, accept=new.identity.accept)
        else:
            replace[field] = getattr(new, field)
    applied = {option_name(f): {"from": _shown(f, old), "to": _shown(f, new)} for f in runtime}
    for field in runtime:
        _apply(bridge, field, new)
    bridge.config = dataclasses.replace(old, **replace)
    needs = sorted(option_name(f) for f in restart)
    counters.inc("reloads", outcome="applied")
    log.info(
        "Reload ({how}): applied {applied}; needs a restart: {restart}",
        how=how,
        applied=", ".join(sorted(applied)) or "nothing",
        restart=", ".join(needs) or "nothing",
        changed=sorted(applied),
        needsRestart=needs,
        event="reload.applied",
    )
    return {"applied": applied, "needsRestart": needs, "file": str(old.config_file)}


class SighupReloader:
    """SIGHUP re-reads the file (from the reactor thread); the old handler is restored."""

    def __init__(self, bridge: BridgeView, reactor: Any, parse: Parse) -> None:
        self.bridge = bridge
        self.reactor = reactor
        self.parse = parse
        self._previous: Any = None
        self.installed = False

    def install(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False
        self._previous = signal.signal(signal.SIGHUP, self._signalled)
        self.installed = True
        return True

    def uninstall(self) -> None:
        if self.installed:
            signal.signal(signal.SIGHUP, self._previous or signal.SIG_DFL)
            self.installed = False

    def _signalled(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> None:
        try:
            reload(self.bridge, self.parse, how="SIGHUP")
        except ReloadRefused:
            pass  # logged (reload.refused); the bridge runs on as it was
