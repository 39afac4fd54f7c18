"""The bandwidth limiter's pure scheduler, driven by explicit times (an injected clock)."""

from __future__ import annotations

from collections.abc import Hashable

from twisted.internet.task import Clock

from smbridge.codec import Kind, encode_raw
from smbridge.codec.catalog import (
    GET_DIRECTORY,
    HEARTBEAT,
    QUEUE_CHANGED,
    STATUS_CHANGED,
    WATCH_QUEUE,
    Priority,
)
from smbridge.sender.parameters import LimiterSettings
from smbridge.sender.scheduler import MEDIUM_MAX_HOLD, Scheduler, classify

ON = LimiterSettings(enabled=True, total_bytes=100_000, interval_ms=1000, medium_percent=50)


def frame(kind: int, message: tuple[int, int], size: int, tag: int = 0) -> bytes:
    """A frame of exactly ``size`` bytes (header 14), tagged in its requestId."""
    return encode_raw(kind, message[0], message[1], tag, b"x" * (size - 14))


def high(size: int = 1000, tag: int = 0) -> bytes:
    return frame(Kind.NOTIFICATION, STATUS_CHANGED, size, tag)


def medium(size: int = 1000, tag: int = 0) -> bytes:
    return frame(Kind.RESPONSE, GET_DIRECTORY, size, tag)


def low(size: int = 1000, tag: int = 0) -> bytes:
    return frame(Kind.NOTIFICATION, QUEUE_CHANGED, size, tag)


def tag_of(data: bytes) -> int:
    return int.from_bytes(data[10:14], "big")


def saturate(s: Scheduler, now: float, key: Hashable = "fill") -> None:
    """Use up the current interval's budget so limiting is on from here."""
    while not s.limiting:
        s.enqueue(key, low(10_000), now)
    s.due(now)
    s.forget(key)  # the frame that found the budget spent would muddle the counts


def run_interval(s: Scheduler, start: float) -> tuple[list[tuple[Hashable, bytes]], float | None]:
    """Every release of the interval that begins at ``start``, following the wake-ups."""
    out, wake = s.due(start)
    while wake is not None and wake < start + 1.0:
        more, wake = s.due(wake)
        out += more
    return out, wake


def by_class(released: list[tuple[Hashable, bytes]], settings: LimiterSettings) -> dict[str, int]:
    sizes = {p.value: 0 for p in Priority}
    for _, data in released:
        sizes[classify(data, settings).value] += len(data)
    return sizes


def test_classification_follows_the_catalog_and_frame_kind():
    """High-list types are high, other responses and errors medium, other notifications low."""
    s = LimiterSettings()
    assert classify(high(), s) is Priority.HIGH
    assert classify(frame(Kind.RESPONSE, HEARTBEAT, 20), s) is Priority.HIGH
    assert classify(frame(Kind.ERROR, HEARTBEAT, 20), s) is Priority.HIGH
    assert classify(medium(), s) is Priority.MEDIUM
    assert classify(frame(Kind.ERROR, GET_DIRECTORY, 20), s) is Priority.MEDIUM
    assert classify(frame(Kind.RESPONSE, (999, 1), 20), s) is Priority.MEDIUM
    assert classify(low(), s) is Priority.LOW
    assert classify(frame(Kind.NOTIFICATION, (999, 1), 20), s) is Priority.LOW


def test_classification_follows_changed_lists():
    """A type added to the medium list is medium; one removed from the high list is not high."""
    s = LimiterSettings(medium=LimiterSettings().medium | {QUEUE_CHANGED})
    assert classify(low(), s) is Priority.MEDIUM
    s = LimiterSettings(high=LimiterSettings().high - {STATUS_CHANGED})
    assert classify(high(), s) is Priority.LOW


def test_disabled_limiter_releases_everything_at_once():
    """With the limiter off every frame comes out of the next due() in order, with no wake."""
    s = Scheduler(LimiterSettings(), 0.0)
    for i in range(300):
        s.enqueue("a", low(10_000, i), 0.0)
    out, wake = s.due(0.0)
    assert [tag_of(d) for _, d in out] == list(range(300))
    assert wake is None
    assert s.stats[Priority.LOW].sent_bytes == 3_000_000


def test_under_the_limit_no_delay_is_added():
    """Below the total per interval, frames come out at once and limiting stays off."""
    s = Scheduler(ON, 0.0)
    for t in range(10):
        for i in range(9):
            s.enqueue("a", low(10_000, i), t + 0.5)
        out, wake = s.due(t + 0.5)
        assert len(out) == 9
        assert wake is None
    assert not s.limiting


def test_limiting_switches_on_when_the_budget_is_used_and_off_when_the_rate_falls():
    """The frame that finds the interval's budget spent waits; limiting ends at an idle boundary."""
    s = Scheduler(ON, 0.0)
    for i in range(10):
        s.enqueue("a", low(10_000, i), 0.1)
    assert not s.limiting
    s.enqueue("a", low(10_000, 10), 0.2)
    assert s.limiting
    out, wake = s.due(0.2)
    assert len(out) == 10
    assert wake == 0.3  # the next pacing step; its budget is spent too
    assert s.due(0.3) == ([], 0.4)
    out, wake = s.due(1.0)
    assert [tag_of(d) for _, d in out] == [10]
    assert s.limiting  # the boundary released a waiting frame
    out, wake = s.due(2.0)
    assert out == []
    assert not s.limiting
    assert wake is None


def test_high_goes_first_up_to_the_total_then_medium_share_then_low():
    """At a boundary with all classes waiting: high, then medium's % of the rest, then low."""
    s = Scheduler(ON, 0.0)
    saturate(s, 0.0)
    for i in range(40):
        s.enqueue("a", high(1000, i), 0.5)
        s.enqueue("b", medium(1000, i), 0.5)
        s.enqueue("c", low(1000, i), 0.5)
    out, wake = run_interval(s, 1.0)
    # 40 000 high; medium 50 % of the 60 000 left = 30 000; low the other 30 000.
    assert by_class(out, ON) == {"high": 40_000, "medium": 30_000, "low": 30_000}
    assert wake == 2.0
    out, _ = run_interval(s, 2.0)
    # no high left: medium takes its 50 % share (only 10 000 waiting), low the rest.
    assert by_class(out, ON) == {"high": 0, "medium": 10_000, "low": 10_000}


def test_high_alone_may_use_the_whole_total():
    """A high flood gets exactly the total each interval and nothing else goes."""
    s = Scheduler(ON, 0.0)
    saturate(s, 0.0)
    for i in range(500):
        s.enqueue("a", high(1000, i), 0.5)
    s.enqueue("b", low(1000), 0.5)
    for t in (1.0, 2.0, 3.0):
        out, _ = run_interval(s, t)
        assert by_class(out, ON) == {"high": 100_000, "medium": 0, "low": 0}


def test_medium_percentage_setting_changes_the_split():
    """With 20 % medium, medium gets 20 % of what high left and low the other 80 %."""
    settings = LimiterSettings(enabled=True, total_bytes=100_000, medium_percent=20)
    s = Scheduler(settings, 0.0)
    saturate(s, 0.0)
    for i in range(100):
        s.enqueue("a", high(1000, i) if i < 50 else medium(1000, i), 0.5)
        s.enqueue("b", low(1000, i), 0.5)
    out, _ = run_interval(s, 1.0)
    assert by_class(out, settings) == {"high": 50_000, "medium": 10_000, "low": 40_000}


def test_medium_uses_what_low_leaves_unused_and_low_what_medium_leaves():
    """A class with too little waiting leaves its share to the other one."""
    s = Scheduler(ON, 0.0)
    saturate(s, 0.0)
    for i in range(90):
        s.enqueue("b", medium(1000, i), 0.5)
    for i in range(5):
        s.enqueue("c", low(1000, i), 0.5)
    out, _ = run_interval(s, 1.0)
    assert by_class(out, ON) == {"high": 0, "medium": 90_000, "low": 5_000}
    s2 = Scheduler(ON, 0.0)
    saturate(s2, 0.0)
    for i in range(5):
        s2.enqueue("b", medium(1000, i), 0.5)
    for i in range(120):
        s2.enqueue("c", low(1000, i), 0.5)
    out, _ = run_interval(s2, 1.0)
    assert by_class(out, ON) == {"high": 0, "medium": 5_000, "low": 95_000}


def test_bytes_per_interval_equal_the_total_over_time_with_odd_frame_sizes():
    """Frames are never split; the overdraft is carried, so the sum over intervals is exact."""
    s = Scheduler(ON, 0.0)
    saturate(s, 0.0)
    for i in range(2000):
        s.enqueue("a", low(3_001, i), 0.5)
    sent = []
    for t in range(1, 21):
        out, _ = run_interval(s, float(t))
        sent.append(sum(len(d) for _, d in out))
    assert all(abs(b - 100_000) < 3_001 for b in sent)
    # 20 intervals from t=1: the total is respected to within one frame.
    assert 20 * 100_000 <= sum(sent) < 20 * 100_000 + 3_001


def test_a_medium_frame_is_never_held_more_than_60_s_under_a_permanent_high_flood():
    """With high using every byte forever, each medium frame still leaves within 60 s."""
    s = Scheduler(ON, 0.0)
    saturate(s, 0.0)
    sent_at: dict[int, float] = {}
    queued_at: dict[int, float] = {}
    n = 0
    for t in range(1, 200):
        now = float(t)
        for _ in range(120):  # 120 000 bytes of high a second: more than the total
            s.enqueue("flood", high(1000), now)
        if t <= 100:
            queued_at[n] = now
            s.enqueue("m", medium(500, n), now)
            n += 1
        out, wake = run_interval(s, now)
        for key, data in out:
            if key == "m":
                sent_at[tag_of(data)] = now
        assert wake == now + 1.0
    assert sorted(sent_at) == list(range(100))
    holds = [sent_at[i] - queued_at[i] for i in range(100)]
    assert max(holds) <= MEDIUM_MAX_HOLD
    assert min(holds) >= MEDIUM_MAX_HOLD - 1.0  # high really did take everything else


def test_sessions_in_one_class_are_served_round_robin():
    """A session with a huge backlog delays another by at most one frame per turn."""
    s = Scheduler(ON, 0.0)
    saturate(s, 0.0)
    for i in range(1000):
        s.enqueue("hog", low(1000, i), 0.5)
    for i in range(10):
        s.enqueue("small", low(1000, i), 0.6)
    out, _ = run_interval(s, 1.0)
    keys = [k for k, _ in out]
    assert len(out) == 100
    assert keys[:20] == ["hog", "small"] * 10
    assert keys.count("small") == 10


def test_frames_of_one_session_keep_their_order_within_a_class():
    """FIFO per session and class across several intervals."""
    s = Scheduler(ON, 0.0)
    saturate(s, 0.0)
    for i in range(300):
        s.enqueue("a", low(1000, i), 0.5)
    tags: list[int] = []
    for t in (1.0, 2.0, 3.0, 4.0):
        out, _ = run_interval(s, t)
        tags += [tag_of(d) for k, d in out if k == "a"]
    assert tags == list(range(300))


def test_a_response_is_not_overtaken_by_a_later_notification_about_the_same_thing():
    """A high StatusChanged after a waiting medium WatchStatus reply waits behind it."""
    s = Scheduler(ON, 0.0)
    saturate(s, 0.0)
    for _ in range(200):
        s.enqueue("other", high(1000), 0.5)  # high uses two whole intervals
    s.enqueue("a", frame(Kind.RESPONSE, (171, 2), 1000, 1), 0.5)  # WatchStatus reply
    assert s.enqueue("a", frame(Kind.NOTIFICATION, STATUS_CHANGED, 100, 2), 0.6) is Priority.MEDIUM
    s.enqueue("a", frame(Kind.NOTIFICATION, (172, 5), 100, 3), 0.6)  # other type stays high
    order: list[int] = []
    for t in (1.0, 2.0, 3.0):
        out, _ = run_interval(s, t)
        order += [tag_of(d) for k, d in out if k == "a"]
    assert order == [3, 1, 2]


def test_a_snapshot_reply_is_not_overtaken_by_queue_changes():
    """A medium WatchQueue reply followed by low QueueChanged leave in that order."""
    s = Scheduler(ON, 0.0)
    saturate(s, 0.0)
    for _ in range(100):
        s.enqueue("other", medium(1000), 0.5)  # medium share is spent first
    s.enqueue("a", frame(Kind.RESPONSE, WATCH_QUEUE, 1000, 1), 0.5)
    for i in range(2, 6):
        s.enqueue("a", frame(Kind.NOTIFICATION, QUEUE_CHANGED, 500, i), 0.6)
    order: list[int] = []
    for t in (1.0, 2.0, 3.0):
        out, _ = run_interval(s, t)
        order += [tag_of(d) for k, d in out if k == "a"]
    assert order == [1, 2, 3, 4, 5]


def test_arrivals_mid_interval_use_the_remaining_budget_at_once():
    """While limiting, a frame arriving when budget remains is released without waiting."""
    s = Scheduler(ON, 0.0)
    saturate(s, 0.0)
    for i in range(50):
        s.enqueue("b", low(1000, i), 0.5)
    out, _ = run_interval(s, 1.0)  # releases 50 000 bytes; half the budget is left
    assert len(out) == 50
    assert s.limiting
    s.enqueue("a", high(1000, 7), 1.95)
    out, wake = s.due(1.95)
    assert [tag_of(d) for _, d in out] == [7]
    assert wake == 2.0


def test_a_high_frame_waits_at_most_one_pacing_step_under_a_low_flood():
    """Under a permanent low flood a high frame arriving mid-interval leaves within 0.1 s."""
    s = Scheduler(ON, 0.0)
    saturate(s, 0.0)
    for i in range(3000):
        s.enqueue("flood", low(1000, i), 0.5)
    run_interval(s, 1.0)
    out, wake = s.due(2.0)
    assert sum(len(d) for _, d in out) == 10_000  # one step's worth
    s.enqueue("a", high(500, 9), 2.05)
    out, wake = s.due(2.05)
    assert [k for k, _ in out] == []
    assert wake == 2.1
    out, _ = s.due(2.1)
    assert [tag_of(d) for k, d in out if k == "a"] == [9]
    assert out[0][0] == "a"  # high goes first in the step


def test_turning_the_limiter_off_releases_what_waits():
    """configure() with enabled off hands every waiting frame out at the next due()."""
    s = Scheduler(ON, 0.0)
    saturate(s, 0.0)
    for i in range(500):
        s.enqueue("a", low(1000, i), 0.5)
    assert s.queued_bytes == 500_000
    s.configure(LimiterSettings(), 0.6)
    out, wake = s.due(0.6)
    assert [tag_of(d) for k, d in out if k == "a"] == list(range(500))
    assert s.queued_bytes == 0
    assert not s.limiting and wake is None


def test_a_smaller_total_takes_effect_from_the_next_interval():
    """Lowering the total mid-interval lowers what the next boundary releases."""
    s = Scheduler(ON, 0.0)
    saturate(s, 0.0)
    for i in range(500):
        s.enqueue("a", low(1000, i), 0.5)
    s.configure(LimiterSettings(enabled=True, total_bytes=60_000), 0.7)
    out, _ = run_interval(s, 1.0)
    assert sum(len(d) for _, d in out) == 60_000


def test_forget_drops_a_sessions_frames_and_counts_them():
    """A lost connection's waiting frames are dropped and the queued bytes go down."""
    s = Scheduler(ON, 0.0)
    saturate(s, 0.0)
    for i in range(10):
        s.enqueue("a", low(1000, i), 0.5)
        s.enqueue("b", medium(1000, i), 0.5)
    assert s.queued_bytes == 20_000
    assert s.forget("a") == 10_000
    assert s.queued_bytes == 10_000
    out, _ = run_interval(s, 1.0)
    assert {k for k, _ in out} == {"b"}


def test_intervals_are_counted_with_a_twisted_clock():
    """Driven by Clock.seconds(), skipped idle intervals record zero bytes."""
    clock = Clock()
    s = Scheduler(ON, clock.seconds())
    saturate(s, clock.seconds())
    clock.advance(1.0)
    s.due(clock.seconds())
    clock.advance(3.0)
    s.due(clock.seconds())
    assert list(s.history)[-3:] == [0, 0, 0]
    assert list(s.history)[0] >= 100_000
