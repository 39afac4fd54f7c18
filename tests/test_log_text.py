"""The fast text log formatter writes exactly twistd's text lines (smbridge/log_text.py).

Every comparison is against Twisted's own ``textFileLogObserver`` formatter, on the
same event: a table of events covering each path (fast and fallback), the events a
real logon logs through the router, random formats and fields, and time stamps
across second boundaries, a sub-second time format and a daylight saving change.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.application.service import MultiService
from twisted.internet.address import IPv4Address
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import (
    FileLogObserver,
    Logger,
    LogLevel,
    LogPublisher,
    eventAsJSON,
    globalLogPublisher,
    jsonFileLogObserver,
    textFileLogObserver,
)
from twisted.python.failure import Failure

from smbridge.codec import Kind
from smbridge.codec import catalog as c
from smbridge.log_text import (
    PROBE_TIME,
    FastTextFormat,
    fast_text_format,
    is_text_formatter,
    restore,
    speed_up,
)
from smbridge.logs import LevelFiltering
from smbridge.router.throttle import ThrottleSettings
from smbridge.session.session import EndReason
from smbridge.testing import RouterHarness
from smbridge.transports.connection import ClientConnectionFactory

T = 1_764_790_000.25  # a time stamp well inside a second


class Recording:
    """Twisted's text formatter, recording the events it was asked to format itself."""

    def __init__(self, time_format: str | None = "%Y-%m-%dT%H:%M:%S%z") -> None:
        self.original = textFileLogObserver(io.StringIO(), timeFormat=time_format).formatEvent
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> str | None:
        self.events.append(event)
        return self.original(event)

    def asked_for(self, event: dict[str, Any]) -> bool:
        return any(seen is event for seen in self.events)


def pair(time_format: str | None = "%Y-%m-%dT%H:%M:%S%z") -> tuple[Recording, FastTextFormat]:
    original = Recording(time_format)
    fast = fast_text_format(original)
    assert fast is not None
    return original, fast


class Boom:
    def __format__(self, spec: str) -> str:
        raise RuntimeError("no format")


class Named:
    name = "named"
    _hidden = "hidden"


def _failure() -> Failure:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        return Failure()
    raise AssertionError("unreachable")


def _flattened() -> dict[str, Any]:
    from twisted.logger._flatten import flattenEvent

    event: dict[str, Any] = {"log_format": "flat {x!r}", "log_time": T, "x": [1]}
    flattenEvent(event)
    return event


def base(**fields: Any) -> dict[str, Any]:
    return {
        "log_time": T,
        "log_namespace": "smbridge.session.registry.SessionRegistry",
        "log_level": LogLevel.info,
        **fields,
    }


# (name, event, whether the fast path formats it itself)
CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("plain", base(log_format="Session {sid} created", sid="s1"), True),
    ("system", base(log_format="hello", log_system="sm1,127.0.0.1"), True),
    ("system-not-str", base(log_format="hello", log_system=7), False),
    ("no-namespace-no-level", {"log_format": "x", "log_time": T}, True),
    ("namespace-no-level", {"log_format": "x", "log_time": T, "log_namespace": "n"}, True),
    ("level-no-namespace", {"log_format": "x", "log_time": T, "log_level": LogLevel.warn}, True),
    ("namespace-none", {"log_format": "x", "log_time": T, "log_namespace": None}, True),
    ("newlines", base(log_format="a\nb {v}\n", v="c\nd"), True),
    ("system-newline", base(log_format="m", log_system="a\nb"), True),
    ("empty-format", base(log_format=""), True),
    ("empty-message", base(log_format="{v}", v=""), True),
    ("no-format", base(), False),
    ("format-none", base(log_format=None), False),
    ("bytes-format", base(log_format=b"bytes {v}", v=1), False),
    ("int-format", base(log_format=42), False),
    ("missing-key", base(log_format="{nothere}"), False),
    ("positional", base(log_format="{} and {0}"), False),
    ("bad-brace", base(log_format="a } b"), False),
    ("call", base(log_format="{f()} {o.m()}", f=lambda: "called", o=Named()), False),
    ("attribute", base(log_format="{o.name} {n.real} {n.imag}", o=Named(), n=3), True),
    ("underscore-attribute", base(log_format="{o._hidden}", o=Named()), False),
    ("wrapper-attribute", base(log_format="{o._wrapped} {o.__class__}", o=Named()), False),
    ("index", base(log_format="{d[k]} {l[0]} {l[1]!r}", d={"k": "v"}, l=[1, "two"]), True),
    ("conversions", base(log_format="{v!r} {v!s} {v!a} {v}", v="é'\""), True),
    ("specs", base(log_format="[{v:>8}] {n:.2f} {n:08.3f} {i:x}", v="ab", n=1.5, i=255), True),
    ("nested-spec", base(log_format="[{v:{w}}] [{v:>{n}}]", v="ab", w="^6", n=5), True),
    ("escaped", base(log_format="{{literal}} {v}}}", v=1), True),
    ("bad-spec", base(log_format="{v:d}", v="str"), False),
    ("format-raises", base(log_format="{b}", b=Boom()), False),
    ("unicode", base(log_format="ünïcødé {v} ✓", v="日本"), True),
    ("str-subclass-format", base(log_format=type("S", (str,), {})("sub {v}"), v=1), False),
    ("failure", base(log_format="it failed", log_failure=_failure()), False),
    ("failure-no-format", base(log_failure=_failure()), False),
    ("flattened", _flattened(), False),
    ("no-time", {"log_format": "x", "log_namespace": "n", "log_level": LogLevel.info}, False),
    ("int-time", base(log_format="x", log_time=1_764_790_000), False),
    ("time-edge", base(log_format="x", log_time=1_764_790_000.9999996), True),
    ("negative-time", base(log_format="x", log_time=-0.5), True),
]


@pytest.mark.parametrize(("name", "event", "fast_path"), CASES, ids=[c[0] for c in CASES])
def test_table_gives_twisted_text(name: str, event: dict[str, Any], fast_path: bool) -> None:
    """Each event of the table formats to Twisted's text, by the fast path or the fallback."""
    original, fast = pair()
    expected = original.original(event)
    assert fast(event) == expected
    assert original.asked_for(event) is not fast_path


@pytest.mark.parametrize(("name", "event", "fast_path"), CASES, ids=[c[0] for c in CASES])
def test_table_written_byte_for_byte(name: str, event: dict[str, Any], fast_path: bool) -> None:
    """Through a FileLogObserver writing UTF-8 bytes, both formatters write the same bytes."""
    theirs, ours = io.BytesIO(), io.BytesIO()
    observer = textFileLogObserver(ours)
    assert len(speed_up([observer])) == 1
    textFileLogObserver(theirs)(event)
    observer(event)
    assert ours.getvalue() == theirs.getvalue()


def test_failure_event_gets_twisteds_traceback() -> None:
    """A failure event's line is Twisted's, traceback included, written by the original."""
    original, fast = pair()
    event = base(log_format="it failed", log_failure=_failure())
    text = fast(event)
    assert text is not None and "Traceback" in text and "ZeroDivisionError" in text
    assert text == original.original(event) and original.asked_for(event)


def test_unformattable_event_gets_twisteds_text() -> None:
    """A missing key gives Twisted's "Unable to format event" line, from the original."""
    original, fast = pair()
    event = base(log_format="{nothere}")
    text = fast(event)
    assert text is not None and "Unable to format event" in text
    assert text == original.original(event)


def test_nan_time_raises_as_twisted_does() -> None:
    """A NaN time stamp makes both raise the same error (Twisted does not catch it)."""
    original, fast = pair()
    event = base(log_format="x", log_time=math.nan)
    with pytest.raises(ValueError) as theirs:
        original.original(event)
    with pytest.raises(ValueError) as ours:
        fast(event)
    assert str(ours.value) == str(theirs.value)


def _logon_events() -> Iterator[dict[str, Any]]:
    """The events a logon, its end, a refused logon and a throttled one log."""
    logged = EventLoggingObserver()
    globalLogPublisher.addObserver(logged)
    try:
        harness = RouterHarness()
        harness.logon("agent1")
        harness.registry.end_all(EndReason.LOGOUT)
        harness.upstream()  # what the end sent the Notifier
        harness.router.throttle.settings = ThrottleSettings(free_failures=1)
        conn = ClientConnectionFactory(harness.router, harness.batcher).connection("tls")
        conn.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 4000)))  # type: ignore[no-untyped-call]
        harness.send(conn, c.CREATE_SESSION, 1, {"user": "agent2", "password": "guess"})
        (auth,) = harness.upstream()
        harness.notifier.answer(
            auth,
            {"code": "logon-failed", "message": "no", "reason": "bad-credentials"},
            kind=Kind.ERROR,
        )
        harness.send(conn, c.CREATE_SESSION, 2, {"user": "agent2", "password": "guess"})
    finally:
        globalLogPublisher.removeObserver(logged)
    yield from logged


def test_a_logons_events_give_twisted_text_by_the_fast_path() -> None:
    """session.created/ended, logon_failed and logon_throttled: Twisted's lines, fast path."""
    events = list(_logon_events())
    keys = {e.get("event") for e in events}
    wanted = {"session.created", "session.ended", "session.logon_failed", "session.logon_throttled"}
    assert wanted <= keys
    original, fast = pair()
    for event in events:
        assert fast(event) == original.original(event), event
        if event.get("event") in wanted:
            assert not original.asked_for(event)


NAMES = ["a", "b", "n", "s", "l", "d"]
SPECS = [
    "",
    "",
    "",
    ":>6",
    ":<3",
    ":^5",
    ":x",
    ":.2f",
    ":08.3f",
    ":{w}",
    ":,",
    ":d",
    "!r",
    "!s",
    "!a",
]


@st.composite
def formats(draw: st.DrawFn) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["text", "field", "field", "field", "raw"]))
        if kind == "text":
            text = draw(st.text(alphabet="ab \n{}é", max_size=6))
            parts.append(text.replace("{", "{{").replace("}", "}}"))
        elif kind == "field":
            name = draw(st.sampled_from([*NAMES, "missing"]))
            access = draw(st.sampled_from(["", "", "", ".real", ".upper", "[0]", "[k]", "[1]"]))
            parts.append("{" + name + access + draw(st.sampled_from(SPECS)) + "}")
        else:  # anything, parse errors included
            parts.append(draw(st.text(alphabet="{}[]!:.()_0ar\n", max_size=6)))
    return "".join(parts)


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(0, 9), max_size=3),
    st.dictionaries(st.sampled_from(["k", "j"]), st.text(max_size=4), max_size=2),
)


@settings(max_examples=600, deadline=None)
@given(
    fmt=formats(),
    values=st.fixed_dictionaries({name: VALUES for name in NAMES}),
    width=st.sampled_from(["", "4", ">3", "x"]),
    when=st.floats(0, 4_000_000_000),
    system=st.sampled_from([None, "sm1", "a\nb"]),
    level=st.sampled_from([None, *LogLevel.iterconstants()]),
)
def test_random_formats_give_twisted_text(
    fmt: str,
    values: dict[str, Any],
    width: str,
    when: float,
    system: str | None,
    level: LogLevel | None,
) -> None:
    """Random formats over random fields: the fast formatter's text is Twisted's."""
    original, fast = pair()
    event: dict[str, Any] = {"log_format": fmt, "log_time": when, "w": width, **values}
    event["log_namespace"] = "smbridge.x"
    if system is not None:
        event["log_system"] = system
    if level is not None:
        event["log_level"] = level
    assert fast(event) == original.original(event)


# Fields that format without error for the typed values of test_valid_formats_...
VALID_FIELDS = {
    "s": ["", "[0]", "!r", "!s", "!a", ":>6", ":<3", ":^5", ":{w}", "!r:>9", ".upper"],
    "i": ["", ".real", ".imag", ":x", ":,", ":d", ":08.3f", ":>6", "!r", ":{w}", ".bit_length"],
    "f": ["", ".real", ":.2f", ":08.3f", ":e", ":%", ":>12", "!r", "!s"],
    "l": ["", "[0]", "[0]!r", "!a"],
    "d": ["", "[k]", "[k]!r", "[k]:>5"],
    "b": ["", "!r", ":d"],
}


@st.composite
def valid_formats(draw: st.DrawFn) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 5))):
        text = draw(st.text(alphabet="ab \n{}é", max_size=4))
        name = draw(st.sampled_from(sorted(VALID_FIELDS)))
        field = draw(st.sampled_from(VALID_FIELDS[name]))
        parts.append(text.replace("{", "{{").replace("}", "}}") + "{" + name + field + "}")
    return "".join(parts)


@settings(max_examples=400, deadline=None)
@given(
    fmt=valid_formats(),
    s=st.text(min_size=1, max_size=8),
    i=st.integers(),
    f=st.floats(),
    seq=st.lists(st.one_of(st.integers(), st.text(max_size=3)), min_size=1, max_size=3),
    k=st.text(max_size=5),
    b=st.booleans(),
    w=st.sampled_from(["", "4", ">3", "^7"]),
)
def test_valid_formats_take_the_fast_path_with_twisted_text(
    fmt: str, s: str, i: int, f: float, seq: list[Any], k: str, b: bool, w: str
) -> None:
    """Fields it can format (attributes, indexes, !r/!s/!a, specs): Twisted's text, fast."""
    original, fast = pair()
    event = base(log_format=fmt, s=s, i=i, f=f, l=seq, d={"k": k}, b=b, w=w)
    assert fast(event) == original.original(event)
    assert not original.asked_for(event)


def test_time_prefix_across_second_boundaries() -> None:
    """The kept prefix follows the events' seconds, forward, backward and at the edge."""
    original, fast = pair()
    start = math.floor(T)
    for offset in (0.1, 0.9, 0.9999996, 1.0, 1.5, 0.95, 2.0, 61.0, 3600.0, 0.2):
        event = {"log_format": "x", "log_time": start + offset, "log_system": "s"}
        assert fast(event) == original.original(event)
    assert fast.per_second


def test_sub_second_time_format_is_never_cached() -> None:
    """With microseconds in the time format each line gets its own, right, stamp."""
    original, fast = pair("%H:%M:%S.%f")
    assert not fast.per_second
    texts = []
    for offset in (0.1, 0.2, 0.201):
        event = {"log_format": "x", "log_time": T + offset, "log_system": "s"}
        texts.append(fast(event))
        assert texts[-1] == original.original(event)
    assert len(set(texts)) == 3


def test_no_time_format_gives_a_dash() -> None:
    """A text observer made without a time format writes "-" where the time goes."""
    original, fast = pair(None)
    event = base(log_format="x")
    assert (
        fast(event)
        == original.original(event)
        == "- [smbridge.session.registry.SessionRegistry#info] x\n"
    )


def test_daylight_saving_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """Around a local clock change each second's stamp carries that second's offset."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        original, fast = pair()
        change = 1_774_746_000.0  # 2026-03-29 01:00:00 UTC: 02:00 CET becomes 03:00 CEST
        stamps = []
        for offset in (-1.5, -0.5, -0.0000001, 0.0, 0.5, 1.0, -0.25):
            event = {"log_format": "x", "log_time": change + offset, "log_system": "s"}
            stamps.append(fast(event))
            assert stamps[-1] == original.original(event)
        assert stamps[1] is not None and stamps[1].startswith("2026-03-29T01:59:59+0100")
        assert stamps[4] is not None and stamps[4].startswith("2026-03-29T03:00:00+0200")
    finally:
        monkeypatch.undo()
        time.tzset()


def test_probe_time_is_inside_a_second() -> None:
    """The probes at PROBE_TIME and 0.999 s later fall in one second."""
    assert math.floor(PROBE_TIME) == math.floor(PROBE_TIME + 0.999)


def test_only_twisteds_text_formatter_is_recognised() -> None:
    """textFileLogObserver's formatter is recognised; the JSON one and others are not."""
    assert is_text_formatter(textFileLogObserver(io.StringIO()).formatEvent)
    assert not is_text_formatter(jsonFileLogObserver(io.StringIO()).formatEvent)
    assert not is_text_formatter(eventAsJSON)
    assert not is_text_formatter(FastTextFormat(print, True))  # type: ignore[arg-type]


def test_a_formatter_that_is_not_twisteds_is_not_stood_in_for() -> None:
    """A formatter whose probe line is not the text layout gets no fast formatter."""
    assert fast_text_format(lambda event: "{}\n") is None
    assert fast_text_format(lambda event: None) is None


@pytest.mark.parametrize("level", ["debug", "info", "error"])
def test_level_filtering_installs_and_restores_the_fast_formatter(level: str) -> None:
    """LevelFiltering swaps the text observer's formatter (any level) and gives it back."""
    publisher, out, json_out = LogPublisher(), io.StringIO(), io.StringIO()
    text = textFileLogObserver(out)
    json_file = jsonFileLogObserver(json_out)
    custom = FileLogObserver(io.StringIO(), lambda event: "custom\n")
    originals = [o.formatEvent for o in (text, json_file, custom)]
    for observer in (text, json_file, custom):
        publisher.addObserver(observer)
    log = Logger(namespace="smbridge.test", observer=publisher)
    wrapper = LevelFiltering(MultiService(), level, publisher=publisher)
    wrapper.startService()
    assert isinstance(text.formatEvent, FastTextFormat)
    assert [json_file.formatEvent, custom.formatEvent] == originals[1:]
    events = EventLoggingObserver()
    publisher.addObserver(events)
    log.debug("debug {n}", n=1)
    log.error("error {n}\nsecond line", n=2)
    publisher.removeObserver(events)
    wrapper.stopService()
    assert [o.formatEvent for o in (text, json_file, custom)] == originals
    expected = "".join(
        str(originals[0](e)) for e in events if level == "debug" or e["log_level"] >= LogLevel.error
    )
    assert out.getvalue() == expected and "second line" in expected


def test_restore_leaves_a_formatter_someone_else_set() -> None:
    """A formatter replaced after the swap is not overwritten when the swap is undone."""
    observer = textFileLogObserver(io.StringIO())
    swapped = speed_up([observer, object()])
    assert len(swapped) == 1
    other = textFileLogObserver(io.StringIO()).formatEvent
    observer.formatEvent = other
    restore(swapped)
    assert observer.formatEvent is other
