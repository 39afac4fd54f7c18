"""Socket-level fuzzing: hostile frames over real TLS never break the bridge (issue 15)."""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor, task
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase

from smbridge.client import connect
from smbridge.codec import DEFAULT_MAX_FRAME, Frame, Kind, encode_raw
from smbridge.codec.fuzzing import SEEDS, mutated, whole_requests
from smbridge.testing import poll, start_site

INPUTS = 1500  # mutated frames sent by the attacker
BATCH = 40  # whole requests written at once before waiting for their answers


@pytest.mark.integration
class FuzzOverSockets(TestCase):
    """One logged-on session sends mutated frames; the bridge answers each, logs no failure."""

    timeout = 240

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.site = yield start_site(
            reactor, Path(tempfile.mkdtemp(prefix="smbridge-fuzz-")), guard_limit=0
        )
        self.addCleanup(self.site.stop)
        self.failures: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if "log_failure" in event or event.get("log_level") is LogLevel.critical:
                self.failures.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    @defer.inlineCallbacks
    def _client(self, user: str) -> Any:
        client = yield connect(
            reactor, f"tls://localhost:{self.site.client_port}", ca=self.site.pki.ca
        )
        self.addCleanup(client.close)
        yield client.logon(user, "demo", client_id=f"{user}-fuzz")
        return client

    @defer.inlineCallbacks
    def _attacker(self, answers: Counter[int]) -> Any:
        """A logged-on client whose every non-notification frame is counted by requestId."""
        client = yield self._client("agent1")
        proto = client.protocol
        handle = proto._frame

        def counted(frame: Frame) -> None:
            if frame.kind in (Kind.RESPONSE, Kind.ERROR) and frame.request_id >= 100_000:
                answers[frame.request_id] += 1
                if frame.kind == Kind.ERROR:
                    self.codes[frame.parsed().get("code")] += 1
                    self.errors[frame.request_id] = frame.parsed()
            handle(frame)

        proto._frame = counted
        return client

    @defer.inlineCallbacks
    def test_hostile_frames_are_each_answered_once_and_heartbeats_go_on(self) -> Any:
        """Thousands of mutated frames: one answer per whole request, no traceback, beats kept."""
        self.codes: Counter[Any] = Counter()
        self.errors: dict[int, dict[str, Any]] = {}
        watcher = yield self._client("agent2")
        beats: list[float] = []
        beat_errors: list[Any] = []

        def beat() -> Any:
            began = time.monotonic()
            d = watcher.heartbeat()
            d.addCallbacks(lambda _: beats.append(time.monotonic() - began), beat_errors.append)
            return d

        beating = task.LoopingCall(beat)
        beating.start(0.1)
        self.addCleanup(lambda: beating.running and beating.stop())
        answers: Counter[int] = Counter()
        expected: Counter[int] = Counter()
        attacker = yield self._attacker(answers)
        # First every string field of every request, with a lone surrogate: bad-request naming it.
        named: dict[int, str] = {}
        for message, body in SEEDS:
            for key in [k for k, v in body.items() if isinstance(v, str)]:
                rid = 90_000_000 + len(named)
                payload = json.dumps({**body, key: "x\udfff"}).encode()
                attacker.protocol.transport.write(encode_raw(Kind.REQUEST, *message, rid, payload))
                named[rid] = key
        yield poll(lambda: all(rid in self.errors for rid in named), deadline=20)
        self.assertEqual(
            {
                rid: (self.errors[rid]["code"], self.errors[rid]["message"].split()[0])
                for rid in named
            },
            {rid: ("bad-request", key) for rid, key in named.items()},
        )
        self.assertIn("queue", named.values())
        self.assertIn("password", named.values())
        rng = random.Random(15)
        batch: list[bytes] = []
        closes = partials = 0

        def settled() -> bool:
            return all(answers[rid] >= n for rid, n in expected.items())

        @defer.inlineCallbacks
        def flush() -> Any:
            if batch:
                attacker.protocol.transport.write(b"".join(batch))
                batch.clear()
            yield poll(settled, deadline=20)

        for i in range(INPUTS):
            data = mutated(rng, 100_000 + i, framing=0.03)
            frames, closed, partial = whole_requests(data, DEFAULT_MAX_FRAME)
            for frame in frames:
                expected[frame.request_id] += 1
            if not (closed or partial):
                batch.append(data)
                if len(batch) >= BATCH:
                    yield flush()
                continue
            yield flush()
            attacker.protocol.transport.write(data)
            if closed:  # a bad-frame answer, then the bridge closes the connection
                closes += 1
                yield attacker.protocol.when_closed()
            else:  # the rest of a truncated frame never comes: we hang up
                partials += 1
                yield poll(settled, deadline=20)
                yield attacker.close()
            attacker = yield self._attacker(answers)
        yield flush()
        beating.stop()
        yield beat()
        extra = {rid: n for rid, n in answers.items() if n != expected[rid] and rid in expected}
        self.assertEqual(extra, {})
        self.assertTrue(settled())
        self.assertEqual(self.failures, [])
        self.assertEqual(beat_errors, [])
        self.assertGreater(len(beats), 10)
        self.assertLess(max(beats), 5.0)
        self.assertGreater(self.codes["bad-request"], 50)
        self.assertGreater(closes, 20)
        self.assertGreater(partials, 2)
        self.assertEqual(self.codes["internal-error"], 0)
