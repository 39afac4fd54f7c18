"""The bandwidth limiter's server parameters (PROTOCOL §5), parsed and validated.

Names, ranges and defaults are the Session Manager note's. Parameters arrive as
the Notifier's site configuration (strings or numbers); :func:`apply` turns them
into a frozen :class:`LimiterSettings`. Each parameter is judged on its own: an
invalid value is refused with a message naming the parameter and its range, and
that parameter keeps the value it had; the others still change. A parameter
that is absent takes its default.

The two message lists use the note's syntax, ``(168,1), (171,4)``: each pair adds
a message type to the default list, and a negative eventId removes it, so
``(168,-1)`` takes CreateSession off the high list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from smbridge.codec.catalog import CATALOG, MessageType, Priority

PREFIX = "Bridge Message Bandwidth Limiter "
ENABLED = PREFIX + "Enabled"
TOTAL = PREFIX + "Total Outgoing Bytes Per Interval"
INTERVAL = PREFIX + "Interval Milliseconds"
MEDIUM_PERCENT = PREFIX + "Medium Priority Outgoing Bytes Per Interval Percentage"
HIGH_MESSAGES = PREFIX + "High Priority Messages"
MEDIUM_MESSAGES = PREFIX + "Medium Priority Messages"
MAX_PRIVATE_BYTES = PREFIX + "Maximum Process Private Bytes"
SMALL_MESSAGE = PREFIX + "Small Message Limit Bytes"

INT64_MAX = 2**63 - 1

DEFAULT_HIGH: frozenset[MessageType] = frozenset(
    k for k, e in CATALOG.items() if e.priority is Priority.HIGH
)
DEFAULT_MEDIUM: frozenset[MessageType] = frozenset(
    k for k, e in CATALOG.items() if e.priority is Priority.MEDIUM
)


@dataclass(frozen=True, slots=True)
class LimiterSettings:
    """The limiter's configuration in force (defaults are the note's)."""

    enabled: bool = False
    total_bytes: int = 500_000
    interval_ms: int = 1000
    medium_percent: int = 50
    high: frozenset[MessageType] = DEFAULT_HIGH
    medium: frozenset[MessageType] = DEFAULT_MEDIUM
    max_private_bytes: int = 37_000_000
    small_message_bytes: int = 2000

    @property
    def interval(self) -> float:
        """The interval in seconds."""
        return self.interval_ms / 1000.0


class InvalidParameter(ValueError):
    """A parameter value outside its range; the message names both."""


def _int(name: str, low: int, high: int, range_text: str) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        refused = InvalidParameter(f"{name} must be {range_text}, not {value!r}")
        number = value
        if isinstance(value, bool):
            raise refused
        if isinstance(value, str):
            text = value.strip()
            if not re.fullmatch(r"[+-]?\d+", text):
                raise refused
            number = int(text)
        if not isinstance(number, int) or not low <= number <= high:
            raise refused
        return number

    return parse


def parse_enabled(value: Any) -> bool:
    """Yes/No (also true/false, 1/0, case-insensitive)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("yes", "true", "1", "on"):
        return True
    if text in ("no", "false", "0", "off", ""):
        return False
    raise InvalidParameter(f"{ENABLED} must be Yes or No, not {value!r}")


_PAIR = re.compile(r"\(\s*([+-]?\d+)\s*,\s*([+-]?\d+)\s*\)")


def parse_messages(
    name: str, value: Any, default: frozenset[MessageType]
) -> frozenset[MessageType]:
    """The default list changed by ``(objectType, eventId), ...`` (negative eventId removes)."""
    text = "" if value is None else str(value).strip()
    result = set(default)
    pos = 0
    syntax = f"{name} must be a list like (168,1), (171,-4) with objectType 0..65535"
    while pos < len(text):
        m = _PAIR.match(text, pos)
        if m is None:
            raise InvalidParameter(f"{syntax} and eventId ±1..32767, not {value!r}")
        object_type, event_id = int(m.group(1)), int(m.group(2))
        if not 0 <= object_type <= 0xFFFF or not 1 <= abs(event_id) <= 32767:
            raise InvalidParameter(f"{syntax} and eventId ±1..32767, not {m.group(0)!r}")
        if event_id < 0:
            result.discard((object_type, -event_id))
        else:
            result.add((object_type, event_id))
        pos = m.end()
        rest = re.match(r"\s*(,\s*)?", text[pos:])
        assert rest is not None
        if rest.end() == 0 and pos < len(text):
            raise InvalidParameter(f"{syntax} and eventId ±1..32767, not {value!r}")
        pos += rest.end()
    return frozenset(result)


_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    ENABLED: ("enabled", parse_enabled),
    TOTAL: ("total_bytes", _int(TOTAL, 50_001, INT64_MAX, "an integer greater than 50000")),
    INTERVAL: ("interval_ms", _int(INTERVAL, 100, 5000, "an integer between 100 and 5000")),
    MEDIUM_PERCENT: (
        "medium_percent",
        _int(MEDIUM_PERCENT, 20, 80, "an integer between 20 and 80"),
    ),
    HIGH_MESSAGES: ("high", lambda v: parse_messages(HIGH_MESSAGES, v, DEFAULT_HIGH)),
    MEDIUM_MESSAGES: ("medium", lambda v: parse_messages(MEDIUM_MESSAGES, v, DEFAULT_MEDIUM)),
    MAX_PRIVATE_BYTES: (
        "max_private_bytes",
        _int(MAX_PRIVATE_BYTES, 1, INT64_MAX, "a positive 64-bit integer"),
    ),
    SMALL_MESSAGE: (
        "small_message_bytes",
        _int(SMALL_MESSAGE, 1, INT64_MAX, "a positive 64-bit integer"),
    ),
}

NAMES: tuple[str, ...] = tuple(_FIELDS)


def apply(
    current: LimiterSettings, parameters: Mapping[str, Any]
) -> tuple[LimiterSettings, list[str]]:
    """The settings that ``parameters`` give, and one message per refused value.

    A refused value leaves that parameter as it is in ``current``; an absent one
    takes its default.
    """
    defaults = LimiterSettings()
    changes: dict[str, Any] = {}
    errors: list[str] = []
    for name, (attr, parse) in _FIELDS.items():
        if name not in parameters:
            changes[attr] = getattr(defaults, attr)
            continue
        try:
            changes[attr] = parse(parameters[name])
        except InvalidParameter as e:
            errors.append(str(e))
            changes[attr] = getattr(current, attr)
    return replace(current, **changes), errors
