"""Structured logs: one JSON object per line (``--log-format json``).

Each line holds ``time`` (ISO 8601 UTC), ``level``, ``event`` (the stable key the
code logs with, else the logger's namespace), ``message`` (the formatted text),
``namespace``, and the event's own fields when they are JSON values. A field whose
name says it holds a secret (a token, a password, a key...) is never written, and
its value is masked in the message too: a second guard behind the rule that
secrets are not logged at all.

With twistd, either ``twistd smbridge --log-format json ...`` (the bridge's service
sets the application's log observer) or ``twistd --logger smbridge.logs.json_observer
smbridge ...``; both write to standard output (the journal under systemd).
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any

from twisted.application.service import IServiceCollection, MultiService
from twisted.internet import defer
from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    LogPublisher,
    PredicateResult,
    formatEvent,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from smbridge import log_text

SECRET = re.compile(r"token|password|passwd|secret|authorization|cookie|private|credential", re.I)
MASK = "[redacted]"
_SCALARS = (str, int, float, bool, type(None))


def is_secret(key: str) -> bool:
    return bool(SECRET.search(key))


def _json_value(value: Any, depth: int = 0) -> tuple[bool, Any]:
    """(True, value) when ``value`` is plain JSON (secret keys of a dict dropped)."""
    if isinstance(value, _SCALARS):
        if isinstance(value, float) and value != value:  # NaN is not JSON
            return False, None
        return True, value
    if depth > 4:
        return False, None
    if isinstance(value, list | tuple):
        out = []
        for item in value:
            ok, clean = _json_value(item, depth + 1)
            if not ok:
                return False, None
            out.append(clean)
        return True, out
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                return False, None
            if is_secret(k):
                continue
            ok, clean = _json_value(v, depth + 1)
            if not ok:
                return False, None
            result[k] = clean
        return True, result
    return False, None


def event_record(event: LogEvent) -> dict[str, Any]:
    """The JSON object written for one log event."""
    masked = {
        k: (MASK if is_secret(k) and not k.startswith("log_") else v) for k, v in event.items()
    }
    level = event.get("log_level")
    when = float(event.get("log_time") or 0.0)
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(when, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "level": getattr(level, "name", "info"),
        "event": str(event.get("event") or event.get("log_namespace") or "log"),
        "namespace": event.get("log_namespace"),
        "message": formatEvent(masked),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in record or key in ("format", "message", "isError"):
            continue
        if is_secret(key):
            continue
        ok, clean = _json_value(value)
        if ok:
            record[key] = clean
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        record["error"] = failure.getErrorMessage()
        record["errorType"] = failure.type.__name__ if failure.type else None
        record["traceback"] = failure.getTraceback()
    return record


TRACEBACK_START = "Traceback (most recent call last):"


@implementer(ILogObserver)
class JSONLinesObserver:
    """Writes one JSON object per line to a text stream and flushes it.

    A traceback printed to standard error after twistd redirected it arrives as one
    event per line; those lines are gathered into one event (``event``
    ``stderr.traceback``, the exception line as ``message``, all of it as
    ``traceback``), so a log reader sees one failure, not thirty lines.
    """

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self._traceback: list[LogEvent] = []  # stderr lines of a traceback being gathered

    def __call__(self, event: LogEvent) -> None:
        io = event.get("log_io")
        text = io if isinstance(io, str) else ""
        from_stderr = event.get("log_namespace") == "stderr" and isinstance(io, str)
        if self._traceback:
            if from_stderr:
                self._traceback.append(event)
                if not text.startswith(" "):  # the exception line ends the traceback
                    self._flush_traceback()
                return
            self._flush_traceback()
        if from_stderr and text == TRACEBACK_START:
            self._traceback.append(event)
            return
        self._write(event)

    def _flush_traceback(self) -> None:
        lines, self._traceback = self._traceback, []
        texts = [str(line["log_io"]) for line in lines]
        if len(lines) == 1:
            self._write(lines[0])
            return
        last = texts[-1] if not texts[-1].startswith(" ") else "traceback"
        self._write(
            {
                **lines[-1],
                "log_io": last,
                "event": "stderr.traceback",
                "traceback": "\n".join(texts) + "\n",
            }
        )

    def _write(self, event: LogEvent) -> None:
        try:
            line = json.dumps(event_record(event), ensure_ascii=False, default=str)
        except Exception as e:  # never let a log line break the caller
            line = json.dumps({"event": "log.unwritable", "error": repr(e)})
        self.out.write(line + "\n")
        self.out.flush()


def json_observer() -> JSONLinesObserver:
    """An observer factory for ``twistd --logger smbridge.logs.json_observer``."""
    return JSONLinesObserver(sys.stdout)


# --log-level: the least severe events written (docs/operations.md, "Logs").
LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}


@implementer(ILogFilterPredicate)
class AtLeast:
    """Lets through events at ``level`` or more severe, whatever their namespace.

    What ``LogLevelFilterPredicate(defaultLogLevel=level)`` decides when no namespace
    has a level of its own (none has here), without looking up the event's namespace
    and each of its parents first: every event the bridge logs passes through it.
    """

    def __init__(self, level: LogLevel) -> None:
        self.level = level

    def __call__(self, event: LogEvent) -> PredicateResult:
        answer: PredicateResult = (
            PredicateResult.no if event["log_level"] < self.level else PredicateResult.maybe
        )
        return answer


def level_filter(observer: ILogObserver, level: str) -> ILogObserver:
    """``observer`` seeing only events at ``level`` or more severe."""
    return FilteringLogObserver(observer, [AtLeast(LEVELS[level])])


# The least severe level the running bridge's log writes, while LevelFiltering has
# every observer of the global publisher behind its filter; None: not known.
_least_written: LogLevel | None = None


def written(level: LogLevel) -> bool:
    """Whether an event at ``level`` may be written (False only when it surely is not).

    For a frequent debug line: not emitting it saves the event's construction and its
    trip to the filter. Outside ``twistd`` (tests, a publisher of their own) it is
    always True.
    """
    least = _least_written
    return least is None or level >= least


class LevelFiltering(MultiService):
    """Wraps the bridge's service so twistd's text log holds ``level`` and above only.

    twistd chooses its text observer (standard output, or ``--logfile``) itself and
    does not filter by level. While this service runs, each observer of the log
    publisher sees events through a level filter, and twistd's text observer writes
    its lines with ``smbridge.log_text``'s faster formatter (the same text, at any
    level); they are given back unfiltered, with their own formatter, when it stops,
    so nothing outside the running service changes.
    """

    def __init__(
        self, service: Any, level: str = "info", publisher: LogPublisher = globalLogPublisher
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.level = level
        self.publisher = publisher
        self._filtered: list[tuple[Any, ILogObserver]] = []
        self._formats: log_text.Swapped = []
        service.setServiceParent(self)

    def startService(self) -> None:
        global _least_written
        # LogPublisher names no public way to list its observers.
        observers = list(getattr(self.publisher, "_observers", ()))
        self._formats = log_text.speed_up(observers)
        if self.level != "debug":
            for observer in observers:
                filtered = level_filter(observer, self.level)
                self.publisher.removeObserver(observer)
                self.publisher.addObserver(filtered)
                self._filtered.append((observer, filtered))
            if self.publisher is globalLogPublisher:
                _least_written = LEVELS[self.level]
        super().startService()  # type: ignore[no-untyped-call]

    def stopService(self) -> Any:
        done = defer.maybeDeferred(super().stopService)

        def restore(result: Any) -> Any:
            global _least_written
            if self._filtered and self.publisher is globalLogPublisher:
                _least_written = None
            for observer, filtered in self._filtered:
                self.publisher.removeObserver(filtered)
                self.publisher.addObserver(observer)
            self._filtered = []
            log_text.restore(self._formats)
            self._formats = []
            return result

        return done.addBoth(restore)


class JSONLogging(MultiService):
    """Wraps the bridge's service so twistd logs as JSON (``--log-format json``).

    twistd adds the plugin's service to its application and only then starts
    logging with the application's ``ILogObserver`` component, if any: this sets it,
    filtered at ``level``.
    """

    log = Logger()

    def __init__(self, service: Any, level: str = "info") -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.wrapped = service
        self.level = level
        service.setServiceParent(self)

    def startService(self) -> None:
        """A start-up that raises is logged as one event (with its traceback), then exit 1."""
        try:
            super().startService()  # type: ignore[no-untyped-call]
        except Exception:
            self.log.failure("Start-up failed", event="service.start_failed")
            raise SystemExit(1) from None

    def setServiceParent(self, parent: Any) -> None:
        set_component = getattr(parent, "setComponent", None)
        if callable(set_component):
            set_component(ILogObserver, level_filter(json_observer(), self.level))
        super().setServiceParent(IServiceCollection(parent, parent))  # type: ignore[no-untyped-call]
