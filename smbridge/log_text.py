"""twistd's text log lines, written by a faster formatter with the same output.

twistd writes its text log (standard output, or ``--logfile``) through Twisted's
``textFileLogObserver``: a ``FileLogObserver`` whose ``formatEvent`` builds each line
as ``"{time} [{system}] {message}\\n"`` with a ``strftime`` of a fresh ``datetime``
and a ``string.Formatter`` pass over the event (``formatWithCall``). A logon writes
two such lines, and that formatting was a visible share of the bridge's CPU per logon.

:class:`FastTextFormat` gives the same text for much less: the time prefix is learnt
from the original formatter itself (a probe event, its message and system cut off) and
kept for the last whole second when the format shows no finer unit; the message is
``str.format_map(event)``, which is what ``string.Formatter`` computes for fields
without the ``()`` call syntax. Anything unusual goes to the original formatter, so its
text stays Twisted's: a traceback (``log_failure``), a flattened event, a ``()`` call,
an attribute starting with ``_`` (those are looked up on Twisted's wrapper), no
``log_format`` or not a ``str`` one, a ``log_time`` that is not a float, a
``log_system`` that is not a ``str``, and any exception while formatting (Twisted's
"Unable to format event" text).

:func:`speed_up` swaps it into each text ``FileLogObserver`` of a list;
:func:`restore` gives the originals back. ``smbridge.logs.LevelFiltering`` does both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from twisted.logger import FileLogObserver, LogEvent, LogLevel

Format = Callable[[LogEvent], "str | None"]

# What textFileLogObserver's formatter is called: the one this module stands in for.
TEXT_FORMATTER = ("twisted.logger._file", "textFileLogObserver.<locals>.formatEvent")
# A time the prefix is probed at (any will do: only its fraction of a second matters).
PROBE_TIME = 1_000_000_000.0
_PROBE_TAIL = "[s] x\n"
# datetime rounds a time stamp to the microsecond: a time this close below the next
# second may show that second, so it is not looked up in (or stored as) the cache.
_EDGE = 0.999999


def is_text_formatter(format_event: object) -> bool:
    """Whether ``format_event`` is the formatter ``textFileLogObserver`` made."""
    where = (getattr(format_event, "__module__", None), getattr(format_event, "__qualname__", ""))
    return where == TEXT_FORMATTER


def time_prefix(original: Format, when: float) -> str | None:
    """The ``"{time} "`` the original formatter starts a line at ``when`` with.

    None when its line for a probe event is not ``"{time} [s] x\\n"``.
    """
    text = original({"log_format": "x", "log_time": when, "log_system": "s"})
    if not isinstance(text, str) or not text.endswith(" " + _PROBE_TAIL):
        return None
    return text[: -len(_PROBE_TAIL)]


class FastTextFormat:
    """Formats an event as ``original`` (twistd's text formatter) would, faster.

    ``per_second``: the original's time prefix is the same within each whole second
    (no sub-second unit in its time format), so the last second's prefix is kept.
    When it is not, every event goes to ``original``.
    """

    def __init__(self, original: Format, per_second: bool) -> None:
        self.original = original
        self.per_second = per_second
        # The last second seen and its prefix, as one value: a logging thread reads
        # both or neither.
        self._kept: tuple[int | None, str] = (None, "")

    def __call__(self, event: LogEvent) -> str | None:
        fmt = event.get("log_format")
        when = event.get("log_time")
        if (
            type(fmt) is not str
            or type(when) is not float
            or not self.per_second
            or "log_failure" in event
            or "log_flattened" in event
            or "()" in fmt
            or "._" in fmt
        ):
            return self.original(event)
        try:
            second = math.floor(when)  # raises for a NaN or infinite time, as datetime does
            kept_second, prefix = self._kept
            if second != kept_second or when - second >= _EDGE:
                found = time_prefix(self.original, when)
                if found is None:
                    return self.original(event)
                prefix = found
                if when - second < _EDGE:
                    self._kept = (second, prefix)
            message = fmt.format_map(event)
            system = event.get("log_system")
            if system is None:
                level = event.get("log_level")
                level_name = "-" if level is None else level.name
                system = f"{event.get('log_namespace', '-')}#{level_name}"
            elif type(system) is not str:
                return self.original(event)
        except BaseException:  # as Twisted's formatter: its own text for it
            return self.original(event)
        if not message:
            return None
        body = f"[{system}] {message}"
        if "\n" in body:
            body = body.replace("\n", "\n\t")
        return f"{prefix}{body}\n"


# An event the fast formatter is checked against the original with before it is used.
_SAMPLE: LogEvent = {
    "log_format": "a {b!r} {c:>4} {d[0]}\nz",
    "log_namespace": "smbridge.log_text",
    "log_level": LogLevel.info,
    "b": "b",
    "c": 7,
    "d": [1.5],
}


def fast_text_format(original: Format) -> FastTextFormat | None:
    """A FastTextFormat standing in for ``original``, or None when it cannot be exact.

    The original is probed twice within one second to learn whether its time prefix
    has a finer unit, and the result must give the original's line for a sample event.
    """
    try:
        first = time_prefix(original, PROBE_TIME)
        if first is None:
            return None
        fast = FastTextFormat(original, first == time_prefix(original, PROBE_TIME + 0.999))
        for when in (PROBE_TIME + 0.25, PROBE_TIME + 0.5):
            sample = {**_SAMPLE, "log_time": when}
            if fast(sample) != original(sample):
                return None
    except Exception:
        return None
    return fast


Swapped = list[tuple[FileLogObserver, Format]]


def speed_up(observers: Iterable[Any]) -> Swapped:
    """Give each twistd text ``FileLogObserver`` among ``observers`` the fast formatter.

    Returns each observer changed with its original formatter, for :func:`restore`.
    Other observers (the JSON one, a FileLogObserver of another format) are left alone.
    """
    swapped: Swapped = []
    for observer in observers:
        if not isinstance(observer, FileLogObserver):
            continue
        original = observer.formatEvent
        if not is_text_formatter(original):
            continue
        fast = fast_text_format(original)
        if fast is not None:
            observer.formatEvent = fast
            swapped.append((observer, original))
    return swapped


def restore(swapped: Swapped) -> None:
    """Give the observers :func:`speed_up` changed their original formatters back."""
    for observer, original in swapped:
        current = observer.formatEvent
        if isinstance(current, FastTextFormat) and current.original is original:
            observer.formatEvent = original
