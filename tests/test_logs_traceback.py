"""JSON logs: a traceback written to redirected stderr becomes one event (issue 17, item 5)."""

from __future__ import annotations

import io
import json

from twisted.logger import LogLevel

from smbridge.logs import JSONLinesObserver

TRACEBACK = [
    "Traceback (most recent call last):",
    '  File "x.py", line 1, in <module>',
    "    boom()",
    "ValueError: boom",
]


def stderr_line(text: str) -> dict[str, object]:
    """The event twistd's redirected stderr emits for one line."""
    return {
        "log_io": text,
        "log_namespace": "stderr",
        "log_level": LogLevel.error,
        "log_format": "{log_io}",
        "log_time": 0.0,
    }


def records(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_traceback_lines_are_one_event() -> None:
    """The lines of one traceback are written as one event with the exception as message."""
    out = io.StringIO()
    observer = JSONLinesObserver(out)
    for text in TRACEBACK:
        observer(stderr_line(text))
    observer(stderr_line("plain line"))
    written = records(out)
    assert [r["event"] for r in written] == ["stderr.traceback", "stderr"]
    assert written[0]["message"] == "ValueError: boom"
    assert written[0]["traceback"] == "\n".join(TRACEBACK) + "\n"
    assert written[1]["message"] == "plain line"


def test_other_event_ends_an_unfinished_traceback() -> None:
    """An event from elsewhere flushes the gathered lines before it, nothing is lost."""
    out = io.StringIO()
    observer = JSONLinesObserver(out)
    for text in TRACEBACK[:2]:
        observer(stderr_line(text))
    observer({"log_format": "hello", "log_namespace": "x", "log_time": 0.0, "event": "x.y"})
    written = records(out)
    assert [r["event"] for r in written] == ["stderr.traceback", "x.y"]
    assert written[0]["traceback"] == "\n".join(TRACEBACK[:2]) + "\n"


def test_a_lone_header_line_is_written_as_is() -> None:
    """A single 'Traceback' line followed by another event is written unchanged."""
    out = io.StringIO()
    observer = JSONLinesObserver(out)
    observer(stderr_line(TRACEBACK[0]))
    observer({"log_format": "next", "log_namespace": "x", "log_time": 0.0})
    assert [r["message"] for r in records(out)] == [TRACEBACK[0], "next"]
