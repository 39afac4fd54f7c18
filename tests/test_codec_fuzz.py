"""The decoder never raises whatever the bytes; hostile strings get bad-request (issue 15)."""

from __future__ import annotations

import random
import sys
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher

from smbridge.codec import BadFrame, Decoder, Frame, Kind, encode_raw
from smbridge.codec import catalog as c
from smbridge.codec.fuzzing import check, mutated, whole_requests
from smbridge.testing import RouterHarness

ROOT = Path(__file__).resolve().parent.parent
FUZZ = settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(st.integers(0, 2**64))
def test_mutated_frames_decode_to_frames_or_one_bad_frame(seed):
    """Every mutated request decodes to frames or a single trailing bad-frame, never raising."""
    data = mutated(random.Random(seed), 9)
    decoder = Decoder()
    events = check(decoder, data)
    assert events or decoder.buffered  # nothing is lost silently: an event or a partial frame


@FUZZ
@given(
    st.sampled_from([b"[", b"{", b'"', b"\\ud800", b"9" * 50, b"1e999", b"]", b"}", b",", b":"]),
    st.lists(st.sampled_from([b"[", b'{"a":', b"]", b"}", b"\\", b'"', b"\xed\xa0\x80", b"0"])),
    st.binary(max_size=40),
)
def test_json_shaped_garbage_never_raises(head, parts, tail):
    """Payloads made of JSON's own syntax, cut anywhere, are frames or a bad-frame event."""
    payload = b'{"x":' + head + b"".join(parts) * 40 + tail
    wire = encode_raw(Kind.REQUEST, *c.WATCH_QUEUE, 3, payload)
    events = check(Decoder(), wire)
    assert len(events) == 1 and isinstance(events[0], Frame | BadFrame)
    if isinstance(events[0], BadFrame):
        assert events[0].request_id == 3


def test_the_fuzz_runner_short_run():
    """bench/fuzz.py runs a few thousand inputs cleanly and reports its figures."""
    sys.path.insert(0, str(ROOT))
    from bench import fuzz

    result = fuzz.run(3000, 15.0, seed=15, crash_dir=ROOT / "bench" / "results" / "fuzz-crashes")
    assert "failed_at" not in result and result["inputs"] == 3000
    assert result["bad_frames"] and result["invalid_text"] and result["frames"]


# --- the router answers hostile strings bad-request, naming the field -----------------


def test_a_lone_surrogate_in_any_string_field_is_a_bad_request_naming_it():
    """Fields holding \\ud800 (queue, user, password, station...) get bad-request naming them."""
    h = RouterHarness()
    conn, t, _ = h.logon()
    cases = [
        (c.WATCH_QUEUE, b'{"queue":"Sales\\ud800"}', "queue"),
        (c.GET_DIRECTORY, b'{"name":"\\udfff"}', "name"),
        (c.CREATE_SESSION, b'{"user":"agent\\ud800","password":"demo"}', "user"),
        (c.CREATE_SESSION, b'{"user":"agent1","password":"\\ud800"}', "password"),
        (c.CREATE_SESSION, b'{"user":"agent1","password":"x","station":"\\uDC00"}', "station"),
        (c.CHANGE_STATION, b'{"station":"S\\ud800"}', "station"),
        (c.WATCH_STATUS, b'{"users":["agent2","\\ud800"]}', "users[1]"),
        (c.SET_STATUS, b'{"status":"Away","note":{"x":"\\ud800"}}', "note.x"),
    ]
    for rid, (message, payload, field) in enumerate(cases, start=10):
        conn.dataReceived(encode_raw(Kind.REQUEST, *message, rid, payload))
        (reply,) = h.received(t)
        body = reply.parsed()
        assert (reply.request_id, body["code"]) == (rid, "bad-request"), body
        assert body["message"].startswith(field + " "), body
    assert h.upstream() == []  # nothing went to the Notifier
    h.send(conn, c.HEARTBEAT, 99)
    (beat,) = h.received(t)
    assert beat.kind == Kind.RESPONSE and beat.request_id == 99


def test_deep_nesting_and_huge_numbers_are_bad_frames_that_close():
    """A 100,000-deep or 5,000-digit request is answered bad-frame with its id, then closed."""
    for payload in (
        b'{"queue":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"n":' + b"9" * 5000 + b"}",
    ):
        h = RouterHarness()
        conn, t, _ = h.logon()
        conn.dataReceived(encode_raw(Kind.REQUEST, *c.WATCH_QUEUE, 7, payload))
        (reply,) = h.received(t)
        assert (reply.request_id, reply.parsed()["code"]) == (7, "bad-frame")
        assert t.disconnecting


def _serve_upstream(h: RouterHarness) -> None:
    """Play the Notifier: answer every request the bridge sent it (twice over, for chains)."""
    for _ in range(2):
        for f in h.upstream():
            key = (f.object_type, f.event_id)
            if key == c.LINK_SUBSCRIBE:
                h.notifier.answer(f, {"snapshot": {}})
            elif key == c.LINK_AUTHENTICATE:
                who = {"id": str(f.parsed()["user"]), "displayName": "X", "rights": []}
                h.notifier.answer(f, {"user": who, "station": None, "location": "Indianapolis"})
            elif f.kind == Kind.REQUEST:
                h.notifier.answer(f, {"ok": True})


def test_every_mutated_request_reaching_the_router_gets_exactly_one_answer():
    """2,000 mutated requests (logged on, and logons on fresh connections): one answer each."""
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    try:
        h = RouterHarness()
        conn, t, _ = h.logon()
        rng = random.Random(20)
        codes: Counter[str] = Counter()
        for i in range(2000):
            data = mutated(rng, 1000 + i, framing=0.0)
            frames, closed, partial = whole_requests(data, 1 << 20)
            if closed or partial:
                continue
            (frame,) = frames
            fresh = (frame.object_type, frame.event_id) in (c.CREATE_SESSION, c.RESUME_SESSION)
            target, out = h.client() if fresh else (conn, t)
            target.dataReceived(data)
            _serve_upstream(h)
            answers = [
                f
                for f in h.received(out)
                if f.kind in (Kind.RESPONSE, Kind.ERROR) and f.request_id == frame.request_id
            ]
            assert len(answers) == 1, (data[:200], answers)
            codes[answers[0].parsed().get("code", "ok")] += 1
            if conn.session is None:
                conn, t, _ = h.logon()
    finally:
        globalLogPublisher.removeObserver(observer)
    problems = [
        e
        for e in observer
        if "log_failure" in e or e["log_level"] in (LogLevel.error, LogLevel.critical)
    ]
    assert problems == []
    assert codes["bad-request"] > 100 and codes["ok"] > 100 and codes["internal-error"] == 0
