"""The descriptor reserve: stop accepting clients before the process runs out of fds.

The admin API, the Notifier link's re-dials, log files and the sessions already
logged on all need file descriptors from the same process. A flood of connections
(before their deadlines close them, see prelogon.py) could take every one, and
then nothing else works. So the client listeners (the client port, ws and wss)
stop accepting while fewer than ``reserve`` descriptors are left under the
process's ``RLIMIT_NOFILE``: the last connection accepted over the line is closed
at once (``connections_refused{reason="fd-reserve"}``), the listening sockets
stop reading (new connections wait in the kernel's backlog) and, every
``recheck`` seconds, the open descriptors are counted again; once a quarter of
the reserve (at most 16) is free on top of it, the listeners read again.

Counting the open descriptors (``/proc/self/fd``) costs time in proportion to
their number, so it is done only near the line: each admitted connection adds one
to an estimate made at the last count, which closed connections only make high,
and only an estimate over the line is checked by a count (at most one per
``recheck`` seconds while refusing). Without ``/proc/self/fd`` the reserve is off.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from smbridge.counters import Counters

DEFAULT_RESERVE = 64
RECHECK_SECONDS = 0.5
_FD_DIR = "/proc/self/fd"


def open_descriptors() -> int | None:
    """The process's open file descriptors now (None: cannot tell on this system)."""
    try:
        return len(os.listdir(_FD_DIR)) - 1  # listdir's own descriptor is in the list
    except OSError:
        return None


def descriptor_limit() -> int:
    """The soft ``RLIMIT_NOFILE`` (a very large number when unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 40 if soft == resource.RLIM_INFINITY else int(soft)


class DescriptorReserve:
    """Admits client connections while ``reserve`` descriptors stay free; pauses the ports."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        reserve: int,
        counters: Counters,
        ports: Callable[[], Iterable[Any]] = lambda: (),
        limit: int | None = None,
        count: Callable[[], int | None] = open_descriptors,
        recheck: float = RECHECK_SECONDS,
    ) -> None:
        self.clock = clock
        self.reserve = reserve
        self.counters = counters
        self.ports = ports  # the listening ports to pause (tcp.Port: stopReading/startReading)
        self.limit = descriptor_limit() if limit is None else limit
        self._count = count
        self.recheck = recheck
        self.paused = False
        self.refused = 0
        self._estimate: int | None = None
        self._counted_at = float("-inf")
        self._call: IDelayedCall | None = None

    @property
    def line(self) -> int:
        """Open descriptors allowed with the reserve still free."""
        return self.limit - self.reserve

    def admit(self) -> bool:
        """A connection was accepted (its descriptor is open): keep it, or close it now."""
        if self.reserve <= 0:
            return True
        estimate = self._estimate
        if estimate is None or (
            estimate + 1 > self.line and self.clock.seconds() - self._counted_at >= self.recheck
        ):
            counted = self._count()
            if counted is None:
                return True
            self._counted_at = self.clock.seconds()
            estimate = counted - 1  # the new connection is counted below
        estimate += 1
        self._estimate = estimate
        if estimate >= self.line:
            self._pause(estimate)
        if estimate > self.line:
            self._estimate = estimate - 1  # closed at once
            self.refused += 1
            self.counters.inc("connections_refused", reason="fd-reserve")
            return False
        return True

    def _pause(self, open_now: int) -> None:
        if self.paused:
            return
        self.paused = True
        for port in self.ports():
            port.stopReading()
        self.log.warn(
            "{open} of {limit} file descriptors open: the client listeners stop accepting "
            "until {reserve} are free again",
            open=open_now,
            limit=self.limit,
            reserve=self.reserve,
            event="listener.fd_reserve_paused",
        )
        self._call = self.clock.callLater(self.recheck, self._check)

    def _check(self) -> None:
        self._call = None
        counted = self._count()
        self._counted_at = self.clock.seconds()
        room = max(1, min(16, self.reserve // 4))
        if counted is None or counted + room <= self.line:
            self._estimate = counted
            self._resume(counted)
        else:
            self._call = self.clock.callLater(self.recheck, self._check)

    def _resume(self, open_now: int | None) -> None:
        self.paused = False
        for port in self.ports():
            port.startReading()
        self.log.info(
            "{open} of {limit} file descriptors open: the client listeners accept again",
            open=open_now,
            limit=self.limit,
            event="listener.fd_reserve_resumed",
        )

    def status(self) -> dict[str, Any]:
        """For the admin API and tests."""
        return {
            "limit": self.limit,
            "reserve": self.reserve,
            "paused": self.paused,
            "refused": self.refused,
        }

    def stop(self) -> None:
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
