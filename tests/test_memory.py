"""The memory trimmer: runs at its interval, can be switched off, and reports what it gave back."""

from __future__ import annotations

from twisted.internet.task import Clock

from smbridge.memory import MemoryTrimmer, resident_kb


def test_trims_at_the_interval_and_stops():
    """With an interval the trimmer calls malloc_trim each period and stops with the service."""
    clock = Clock()
    trimmer = MemoryTrimmer(clock, 30)
    calls: list[int] = []
    trimmer.trim = lambda pad: calls.append(pad) or 1
    trimmer.startService()
    clock.advance(29)
    assert calls == []
    clock.advance(1)
    clock.advance(30)
    assert calls == [0, 0]
    trimmer.stopService()
    clock.advance(300)
    assert calls == [0, 0] and clock.getDelayedCalls() == []


def test_interval_zero_never_trims():
    """--trim-interval 0 schedules nothing."""
    clock = Clock()
    trimmer = MemoryTrimmer(clock, 0)
    trimmer.startService()
    assert clock.getDelayedCalls() == []
    trimmer.stopService()


def test_trim_now_reports_kilobytes_and_reads_resident_size():
    """trim_now returns a non-negative size and resident_kb reads this process's size."""
    trimmer = MemoryTrimmer(Clock(), 60)
    assert trimmer.trim_now() >= 0
    size = resident_kb()
    assert size is not None and size > 1000
