"""The view of the bridge that the admin layer reads and steers.

The admin modules (api, status, sessions, metrics, reload) take any object with
these parts; :class:`smbridge.service.BridgeService` is the one that runs, and the
service builds the admin site with itself passed in. The admin layer never imports
the service, ``smbridge.options`` or ``smbridge.tap``: the option parser a reload
re-runs is injected as a :data:`Parse` callable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from smbridge.config import BridgeConfig

if TYPE_CHECKING:
    from smbridge.memory import MemoryTrimmer
    from smbridge.roster.drain import Drainer
    from smbridge.router.router import Router
    from smbridge.session.registry import SessionRegistry
    from smbridge.transports.connection import ClientConnectionFactory
    from smbridge.transports.descriptors import DescriptorReserve
    from smbridge.transports.guard import ConnectionGuard
    from smbridge.tunnel.tunnel import TunnelService
    from smbridge.upstream.connector import UpstreamConnector
    from smbridge.upstream.load import LoadMeter

Parse = Callable[[list[str]], BridgeConfig]
"""The bridge's command line (with ``--config FILE``) to its configuration.

Raises ``BridgeConfigError`` (naming the key) for a file it refuses, and
``usage.UsageError`` for an option value it refuses (``smbridge.options.parse``).
"""


class BridgeView(Protocol):
    """The parts of a running bridge the admin API reads, and the config a reload replaces."""

    config: BridgeConfig  # replaced by a reload: it always describes the running bridge

    @property
    def reactor(self) -> Any: ...
    @property
    def router(self) -> Router: ...
    @property
    def registry(self) -> SessionRegistry: ...
    @property
    def connections(self) -> ClientConnectionFactory: ...
    @property
    def upstream(self) -> UpstreamConnector: ...
    @property
    def load(self) -> LoadMeter: ...
    @property
    def trimmer(self) -> MemoryTrimmer: ...
    @property
    def tunnel(self) -> TunnelService | None: ...
    @property
    def drainer(self) -> Drainer: ...
    @property
    def guard(self) -> ConnectionGuard: ...
    @property
    def reserve(self) -> DescriptorReserve: ...
