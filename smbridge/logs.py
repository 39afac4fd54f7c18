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
from twisted.logger import ILogObserver, LogEvent, formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer

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


@implementer(ILogObserver)
class JSONLinesObserver:
    """Writes one JSON object per line to a text stream and flushes it."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def __call__(self, event: LogEvent) -> None:
        try:
            line = json.dumps(event_record(event), ensure_ascii=False, default=str)
        except Exception as e:  # never let a log line break the caller
            line = json.dumps({"event": "log.unwritable", "error": repr(e)})
        self.out.write(line + "\n")
        self.out.flush()


def json_observer() -> JSONLinesObserver:
    """An observer factory for ``twistd --logger smbridge.logs.json_observer``."""
    return JSONLinesObserver(sys.stdout)


class JSONLogging(MultiService):
    """Wraps the bridge's service so twistd logs as JSON (``--log-format json``).

    twistd adds the plugin's service to its application and only then starts
    logging with the application's ``ILogObserver`` component, if any: this sets it.
    """

    def __init__(self, service: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.wrapped = service
        service.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:
        set_component = getattr(parent, "setComponent", None)
        if callable(set_component):
            set_component(ILogObserver, json_observer())
        super().setServiceParent(IServiceCollection(parent, parent))  # type: ignore[no-untyped-call]
