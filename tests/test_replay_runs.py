"""The replay buffer keeps a fan-out run whole: the same frames, gaps and bytes as frame by frame.

A :class:`Run` is kept as one entry (its frames, their sizes added up once for every
watcher) and cut only where the byte limit falls inside it; these tests hold it to
the naive buffer that numbers and keeps each frame on its own (session/replay.py).
"""

from __future__ import annotations

from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from smbridge.codec import Kind, encode
from smbridge.codec.catalog import QUEUE_CHANGED
from smbridge.session.replay import ReplayBuffer, Run, RunFrames


class NaiveReplay:
    """The reference: each frame numbered and kept on its own, the oldest dropped past the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.frames: deque[bytes] = deque()
        self.size = 0

    def append(self, frame: bytes) -> None:
        self.count += 1
        self.frames.append(frame)
        self.size += len(frame)
        while self.size > self.limit and self.frames:
            self.size -= len(self.frames.popleft())

    def since(self, received: int) -> list[bytes] | None:
        missing = self.count - received
        if missing <= 0:
            return []
        if missing > len(self.frames):
            return None
        return list(self.frames)[len(self.frames) - missing :]

    @property
    def first(self) -> int:
        return self.count - len(self.frames) + 1


def _note(n: int, pad: int) -> bytes:
    return encode(Kind.NOTIFICATION, *QUEUE_CHANGED, 0, {"n": n, "pad": "x" * pad})


def _response(n: int) -> bytes:
    return encode(Kind.RESPONSE, *QUEUE_CHANGED, n, {})


def _same(buf: ReplayBuffer, ref: NaiveReplay) -> None:
    assert (buf.count, len(buf), buf.size, buf.first) == (
        ref.count,
        len(ref.frames),
        ref.size,
        ref.first,
    )
    for received in range(ref.count + 1):
        assert buf.since(received) == ref.since(received), received


pads = st.integers(min_value=0, max_value=120)
op = st.one_of(
    st.tuples(st.just("one"), pads),
    st.tuples(st.just("run"), st.lists(pads, min_size=1, max_size=12)),
    st.tuples(st.just("written"), st.lists(st.tuples(st.booleans(), st.lists(pads, max_size=6)))),
    st.tuples(st.just("extend"), st.lists(st.tuples(st.booleans(), pads), max_size=6)),
    st.tuples(st.just("clear"), st.none()),
)


@settings(max_examples=300, deadline=None)
@given(limit=st.integers(min_value=0, max_value=1500), ops=st.lists(op, max_size=25))
def test_runs_kept_whole_replay_as_frame_by_frame(limit: int, ops: list[tuple[str, object]]):
    """Any mix of single frames, runs, written batches and clears: same frames for every
    ``received``, same gaps, same count, frames held and bytes as the naive buffer."""
    buf, ref = ReplayBuffer(limit), NaiveReplay(limit)
    n = 0

    def note(pad: int) -> bytes:
        nonlocal n
        n += 1
        return _note(n, pad)

    for kind, arg in ops:
        if kind == "one":
            frame = note(arg)  # type: ignore[arg-type]
            assert buf.append(frame) == ref.count + 1
            ref.append(frame)
        elif kind == "run":
            run = Run.of([note(pad) for pad in arg])  # type: ignore[union-attr]
            buf.append_run(run)
            for frame in run.frames:
                ref.append(frame)
        elif kind == "written":  # what a connection writes: single frames and runs, in order
            items: list[bytes | RunFrames] = []
            frames = size = 0
            for is_run, group in arg:  # type: ignore[union-attr]
                if is_run and group:
                    run = Run.of([note(pad) for pad in group])
                    items.append(run.kept)
                    frames += len(run.frames)
                    size += len(run)
                    ref_frames = run.frames
                else:
                    ref_frames = [note(pad) for pad in group]
                    items += ref_frames
                    frames += len(ref_frames)
                    size += sum(map(len, ref_frames))
                for frame in ref_frames:
                    ref.append(frame)
            buf.add(items, frames, size)
        elif kind == "extend":  # what a connection hands back: responses pass unnumbered
            out = [note(pad) if is_note else _response(pad) for is_note, pad in arg]  # type: ignore[union-attr]
            buf.extend(out)
            for frame in out:
                if frame[5] == int(Kind.NOTIFICATION):
                    ref.append(frame)
        else:
            buf.clear()
            ref.frames.clear()
            ref.size = 0
        _same(buf, ref)


def test_a_run_is_cut_where_the_limit_falls_inside_it():
    """The limit falling inside a run keeps its newest frames; asking past them is a gap."""
    frames = [_note(i, 100) for i in range(1, 6)]
    size = len(frames[0])
    buf = ReplayBuffer(size * 3 + 10)
    buf.append_run(Run.of(frames))
    assert (buf.count, len(buf), buf.size, buf.first) == (5, 3, size * 3, 3)
    assert buf.since(2) == frames[2:] and buf.since(4) == frames[4:] and buf.since(1) is None
    more = [_note(i, 100) for i in range(6, 8)]
    buf.append_run(Run.of(more))  # the cut run loses two more of its frames
    assert (buf.count, len(buf), buf.first) == (7, 3, 5)
    assert buf.since(4) == [frames[4], *more] and buf.since(3) is None


def test_a_run_larger_than_the_buffer_keeps_only_what_fits():
    """A run bigger than the whole limit is numbered; only its newest frames that fit stay."""
    frames = [_note(i, 50) for i in range(1, 9)]
    buf = ReplayBuffer(len(frames[0]) - 1)
    buf.append_run(Run.of(frames))
    assert (buf.count, len(buf), buf.size) == (8, 0, 0)
    assert buf.since(8) == [] and buf.since(7) is None
