"""What a worker of ``--workers N`` does differently from a single bridge process.

A worker (``--worker I/N``, started by the supervisor) serves its admin API on a
private Unix socket, ``<run_dir>/admin-<I>.sock`` (the directory is 0700, the socket
0600), for the supervisor to aggregate; listens on the shared ports with
``SO_REUSEPORT`` (:mod:`smbridge.workers.reuseport`); tells the Notifier which worker
of how many it is (``worker``/``workers`` in Register); and stops (as on SIGTERM) when
its supervisor is gone, so that no worker outlives it; and hands a resuming TLS
connection to the worker whose ticket key sealed its ticket (:mod:`smbridge.workers.handoff`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from smbridge.config import BridgeConfig
from smbridge.counters import Counters
from smbridge.transports.resumption import TicketKeys
from smbridge.workers.handoff import Handoff, HandoffEndpoint, TicketOwners
from smbridge.workers.reuseport import ReusePortEndpoint

PARENT_CHECK = 1.0  # seconds between checks that the supervisor is still there


def admin_socket(run_dir: Path, index: int) -> Path:
    """Where worker ``index`` serves its private admin API."""
    return run_dir / f"admin-{index}.sock"


class ParentWatch:
    """Calls ``gone`` once the process's parent (the supervisor) has changed (it died)."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        gone: Callable[[], Any],
        interval: float = PARENT_CHECK,
        parent: Callable[[], int] = os.getppid,
    ) -> None:
        self._parent = parent
        self._expected = parent()
        self._gone = gone
        self._loop = LoopingCall(self._check)
        self._loop.clock = reactor
        self.interval = interval
        self.fired = False

    def start(self) -> None:
        if not self._loop.running:
            self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _check(self) -> None:
        if self._parent() == self._expected or self.fired:
            return
        self.fired = True
        self.stop()
        self.log.warn(
            "The supervisor (pid {pid}) is gone; this worker stops",
            pid=self._expected,
            event="worker.orphaned",
        )
        self._gone()


PUBLISH = 5.0  # seconds between checks that this worker's ticket key names are published


class WorkerService(Service):
    """A worker's own parts, started before its listeners: handoff, key names, parent watch."""

    def __init__(
        self,
        reactor: Any,
        config: BridgeConfig,
        tickets: Callable[[], TicketKeys | None],
        counters: Counters,
        orphaned: Callable[[], Any],
    ) -> None:
        assert config.run_dir is not None
        self.setName("worker")  # type: ignore[no-untyped-call]
        self.config = config
        self.parent_watch = ParentWatch(reactor, orphaned)
        self.reactor = reactor
        self.tickets = tickets
        owners = TicketOwners(
            config.run_dir, config.worker_index, config.worker_count, self.ticket_names, reactor
        )
        self.handoff = Handoff(reactor, owners, counters)
        self._publish = LoopingCall(owners.publish)
        self._publish.clock = reactor

    def ticket_names(self) -> set[bytes]:
        """The key names of this worker's TLS ticket generations (published for the others)."""
        keys = self.tickets()
        generations = keys.generations if keys is not None else []
        return {g.key_name for g in generations if g.key_name is not None}

    def client_endpoint(self, port: int, tls: str | None) -> IStreamServerEndpoint:
        """The client port's, ws's or wss's: SO_REUSEPORT, and for ``tls`` (``"tls"``,
        ``"wss"``) a resuming client handed to the worker that issued its ticket."""
        config = self.config
        shared = ReusePortEndpoint(self.reactor, port, config.interface, config.backlog)
        if tls is None:
            return shared
        return HandoffEndpoint(shared, tls, self.handoff, config.handshake_timeout)

    def admin_endpoint(self) -> IStreamServerEndpoint:
        """The private admin socket the supervisor asks (a stale one is replaced)."""
        assert self.config.run_dir is not None
        path = admin_socket(self.config.run_dir, self.config.worker_index)
        path.unlink(missing_ok=True)  # left by a worker before this one
        return UNIXServerEndpoint(self.reactor, str(path), mode=0o600, wantPID=False)

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.handoff.start()
        self._publish.start(PUBLISH, now=True)
        self.parent_watch.start()

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        self.parent_watch.stop()
        if self._publish.running:
            self._publish.stop()
        self.handoff.stop()
