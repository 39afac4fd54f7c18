"""Giving freed memory back to the operating system.

A burst of large answers (thousands of clients loading a directory at logon)
leaves the C heap full of free holes that glibc keeps for reuse, so the process
stays as large as its worst moment. ``malloc_trim(0)`` hands free pages back.
:class:`MemoryTrimmer` calls it every ``interval`` seconds and logs what it gave
back; on a C library without it (not glibc) the service does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger


def resident_kb() -> int | None:
    """This process's resident size in KB (Linux), or None where /proc is not there."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


class MemoryTrimmer(Service):
    log = Logger()

    def __init__(self, clock: IReactorTime, interval: float) -> None:
        self.clock = clock
        self.interval = interval
        self.trim = _malloc_trim()
        self.returned_kb = 0  # total given back, for status and tests
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self.interval <= 0 or self.trim is None:
            return
        self._loop = LoopingCall(self.trim_now)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=False)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def trim_now(self) -> int:
        """Trim once; return the KB the resident size shrank by."""
        if self.trim is None:
            return 0
        before = resident_kb() or 0
        self.trim(0)
        gave = max(0, before - (resident_kb() or before))
        self.returned_kb += gave
        if gave >= 1024:
            self.log.info(
                "Gave {mb} MB of free memory back to the system",
                mb=gave // 1024,
                event="memory.trimmed",
            )
        return gave
