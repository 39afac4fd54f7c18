"""What every part of the Router shares: its state, the server parameters, identity.

The Router (``router.py``) is one class built from one module per request family,
each a base of the next: ``state.py`` (this), ``roster_requests.py`` (accept or
redirect, the roster, GetServers, GetResourceUri), ``session_requests.py``
(CreateSession, Heartbeat, DestroySession, the end of a session, shutdown),
``link_events.py`` (what the upstream link tells the bridge) and ``router.py``
(dispatch). Each module imports only the one below it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

import smbridge
from smbridge.codec.catalog import LINK_SESSION_OPENED
from smbridge.counters import Counters
from smbridge.resources import ResourceProvider
from smbridge.roster.reach import Aliases
from smbridge.router.directory import Directories
from smbridge.router.fanout import FanOut
from smbridge.router.resume import Resumer
from smbridge.router.throttle import LogBudget, LogonThrottle
from smbridge.router.visibility import Scope, restricted, scope_of
from smbridge.router.watches import Watches
from smbridge.session.hook import HookRunner
from smbridge.session.registry import SessionRegistry
from smbridge.session.session import Session
from smbridge.topics import PARAMETERS_TOPIC, RecordState

if TYPE_CHECKING:
    from smbridge.upstream.connector import UpstreamConnector


@dataclass(frozen=True)
class BridgeIdentity:
    """How this bridge describes itself to the Notifier and to clients."""

    name: str
    fqdn: str
    kind: str = "off-server"
    location: str = ""
    ports: dict[str, int | None] = field(default_factory=dict)
    accept: str = "default"

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "fqdn": self.fqdn, "kind": self.kind, "location": self.location}

    def registration(self) -> dict[str, Any]:
        return {
            **self.public(),
            "ports": dict(self.ports),
            "accept": self.accept,
            "version": smbridge.__version__,
        }


class RouterState:
    """The Router's shared state (set in ``Router.__init__``) and the helpers all parts use."""

    log = Logger()

    registry: SessionRegistry
    upstream: UpstreamConnector
    identity: BridgeIdentity
    # Accept mode (PROTOCOL §4.3), switchable at run time (set_accept_mode).
    accept_mode: str
    # Whether the site counts as loaded (the load meter sets this; docs/switchover.md).
    loaded: Callable[[], bool]
    rng: random.Random
    # Event counts for the metrics endpoint (logons, failures, redirects, resumes...).
    counters: Counters
    fanout: FanOut
    watches: Watches
    directories: Directories
    resources: ResourceProvider
    # Public aliases of bridges, for the roster's ``uri`` of tunnel clients (reach.py).
    alias_of: Aliases
    # The session hook (docs/lifecycle.md); None: every session is allowed everything.
    hook: HookRunner | None
    # Failed logons slow down per (user, address) and per address (throttle.py).
    throttle: LogonThrottle
    _throttle_log: LogBudget
    resumer: Resumer
    # Called with the parameters in force whenever they may have changed (the sender).
    parameter_listeners: list[Callable[[dict[str, Any]], object]]
    _restricted: bool
    _scopes: dict[str, tuple[bool, Scope]]
    _ha_switched: set[str]  # sessions whose next Heartbeat says haSwitchover

    def parameters(self) -> dict[str, Any]:
        """The server parameters in force: the Notifier's, kept current by its topic."""
        state = self.fanout.state(PARAMETERS_TOPIC)
        if isinstance(state, RecordState):
            params: dict[str, Any] = state.record.get("parameters", {})
            return params
        registered: dict[str, Any] = self.upstream.registered.get("parameters", {})
        return registered

    def _parameters_changed(self) -> None:
        self._restricted = restricted(self.parameters())
        self.directories.preload()
        for listener in self.parameter_listeners:
            listener(self.parameters())

    def _scope(self, session: Session) -> Scope:
        """The workgroups a session's user may see in directories (None: all)."""
        cached = self._scopes.get(session.id)
        if cached is None or cached[0] is not self._restricted:
            cached = (self._restricted, scope_of(session.info.rights, self._restricted))
            self._scopes[session.id] = cached
        return cached[1]

    def _announce(self, session: Session) -> None:
        self.upstream.notify(
            LINK_SESSION_OPENED,
            {
                "sessionId": session.id,
                "user": session.info.user_id,
                "station": session.info.station,
            },
        )
