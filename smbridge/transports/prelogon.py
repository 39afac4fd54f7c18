"""Deadlines before logon: the TLS handshake, the WebSocket upgrade, the first logon.

A connection that has not logged on yet is an unauthenticated stranger holding a
file descriptor. Each gets one :class:`Deadline` (one ``DelayedCall``), started
when the connection is accepted and moved on at each stage:

* ``handshake``: on the client port until the TLS handshake completes (a peer that
  sends nothing, or half a ClientHello, stays here); on the wss port likewise;
* ``upgrade``: on the ws/wss ports until the WebSocket opening handshake is done;
* ``logon``: until the first successful ``CreateSession`` or ``ResumeSession``
  (``GetVersion`` and failed logons do not count).

Each stage has its own time, counted from the end of the stage before. A
connection that misses one is aborted and counted as
``connections_closed{reason="<stage>-timeout"}``; logging on cancels the call.
Until then the connection's decoder takes frames of at most
:attr:`PrelogonLimits.max_frame` bytes, refused as soon as a frame's length is read.

No I/O: the clock is injected, the connection's abort is a callable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from smbridge.counters import Counters

HANDSHAKE = "handshake"
UPGRADE = "upgrade"
LOGON = "logon"
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_UPGRADE_TIMEOUT = 10.0
DEFAULT_LOGON_TIMEOUT = 30.0
DEFAULT_PRELOGON_MAX_FRAME = 64 * 1024  # a CreateSession's worth, with room to spare


@dataclass
class PrelogonLimits:
    """The deadlines (seconds) and the frame bound before logon; a reload changes them.

    A change applies to the next stage a connection enters (a running deadline
    keeps its time).
    """

    handshake: float = DEFAULT_HANDSHAKE_TIMEOUT
    upgrade: float = DEFAULT_UPGRADE_TIMEOUT
    logon: float = DEFAULT_LOGON_TIMEOUT
    max_frame: int = DEFAULT_PRELOGON_MAX_FRAME

    def seconds(self, stage: str) -> float:
        return float(getattr(self, stage))


class Deadline:
    """One connection's deadline before logon."""

    log = Logger()

    __slots__ = ("_abort", "_call", "_clock", "_counters", "_limits", "remote", "stage")

    def __init__(
        self,
        clock: IReactorTime,
        limits: PrelogonLimits,
        counters: Counters,
        abort: Callable[[], None],
        stage: str,
        remote: str = "",
    ) -> None:
        self._clock = clock
        self._limits = limits
        self._counters = counters
        self._abort = abort
        self.remote = remote
        self.stage = stage
        self._call: IDelayedCall | None = clock.callLater(limits.seconds(stage), self._expired)

    @property
    def active(self) -> bool:
        """Still waiting (not expired, not done)."""
        return self._call is not None

    def enter(self, stage: str) -> None:
        """The connection moved on to ``stage``: its time starts now."""
        call = self._call
        if call is None or stage == self.stage:
            return
        self.stage = stage
        call.reset(self._limits.seconds(stage))

    def done(self) -> None:
        """Logged on (or gone): the deadline no longer applies."""
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _expired(self) -> None:
        self._call = None
        reason = f"{self.stage}-timeout"
        self._counters.inc("connections_closed", reason=reason)
        self.log.debug(
            "Closing {remote}: no {stage} within {seconds:g} s",
            remote=self.remote,
            stage=self.stage,
            seconds=self._limits.seconds(self.stage),
            reason=reason,
            event="connection.prelogon_timeout",
        )
        self._abort()
