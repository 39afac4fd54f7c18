"""SessionKeeper after a dropped connection: resume with replay, gap, and fresh-logon fallbacks."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from smbridge.client import ClientError
from smbridge.client.keeper import KeeperEvent, SessionKeeper, State
from smbridge.client.order import Backoff
from smbridge.client.testing import FakeBridge, FakeSite
from smbridge.codec import Frame


class KeeperCase(SynchronousTestCase):
    """A FakeSite with bridges a (Indy) and b (London), a keeper logged on at a, watching Sales."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.site = FakeSite(self.clock)
        self.a = self.site.add("a")
        self.b = self.site.add("b", location="London")
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.events: list[KeeperEvent] = []
        self.keeper = self.make_keeper()
        d = self.keeper.start()
        self.pump()
        self.reply = self.successResultOf(d)
        self.pump()
        self.site.dialed.clear()
        snapshot = self.keeper.watch_queue("Sales")
        self.pump()
        self.assertEqual(self.successResultOf(snapshot), {"queue": "Sales", "interactions": []})

    def make_keeper(self, **options: Any) -> SessionKeeper:
        keeper = SessionKeeper(
            None,
            "tls://a.example",
            "alice",
            "demo",
            dial=self.site.dial,
            resolve=lambda host, port: defer.succeed([]),
            clock=self.clock,
            backoff=Backoff(1.0, 2.0, 8.0),
            client_id="pc-1",
            **options,
        )
        keeper.add_listener(self.on_notification)
        keeper.add_event_listener(self.events.append)
        return keeper

    def on_notification(self, name: str, frame: Frame) -> None:
        self.seen.append((name, frame.parsed()))

    def pump(self) -> None:
        self.clock.advance(0)

    def advance(self, seconds: float, step: float = 0.5) -> None:
        """Let ``seconds`` pass in steps, so that pauses scheduled meanwhile run too."""
        for _ in range(round(seconds / step)):
            self.clock.advance(step)

    def added(self) -> list[int]:
        """The ``n`` of every interaction the listener saw added to a queue, in order."""
        return [
            i["n"]
            for name, body in self.seen
            if name == "QueueChanged"
            for i in body.get("added", ())
        ]

    def publish(self, *numbers: int) -> None:
        for n in numbers:
            self.site.publish("Sales", {"id": f"i{n}", "n": n})

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def session(self, bridge: FakeBridge | None = None) -> Any:
        return (bridge or self.a).session_of("alice")


class ResumeTests(KeeperCase):
    def test_dropped_connection_resumes_and_replays_what_was_lost(self) -> None:
        """Events written while the connection was cut are replayed once, in order, on resume."""
        self.publish(1, 2)
        self.pump()
        self.publish(3, 4)  # in flight when the cut comes: lost on the wire
        self.a.cut()
        self.publish(5)  # written while the session lingers
        self.pump()
        self.assertEqual(self.keeper.state, State.CONNECTED)
        self.assertEqual(self.site.dialed, ["a.example:3952"])
        self.assertEqual(self.a.requests[-1], "ResumeSession")
        self.publish(6)
        self.pump()
        self.assertEqual(self.added(), [1, 2, 3, 4, 5, 6])
        self.assertEqual(self.kinds(), ["disconnected", "resumed"])
        self.assertEqual(self.keeper.session_id, self.session().id)
        self.assertFalse(self.events[-1].gap)

    def test_resume_sends_the_count_of_notifications_received(self) -> None:
        """ResumeSession carries sessionId, resumeToken and received = frames seen."""
        sent: list[dict[str, Any]] = []
        original = self.a.handle

        def spy(connection: Any, frame: Frame) -> None:
            if frame.event_id == 5 and frame.object_type == 168:
                sent.append(frame.parsed())
            original(connection, frame)

        self.a.handle = spy  # type: ignore[method-assign]
        self.publish(1, 2, 3)
        self.pump()
        self.a.cut()
        self.pump()
        session = self.session()
        self.assertEqual(
            sent, [{"sessionId": session.id, "resumeToken": session.token, "received": 3}]
        )

    def test_duplicates_from_a_replay_are_dropped(self) -> None:
        """A bridge that replays from an earlier position: frames already seen are not repeated."""
        self.publish(1, 2, 3)
        self.pump()
        self.a.cut()
        original = self.a._resume

        def rewind(connection: Any, body: dict[str, Any], reply: Any, error: Any) -> None:
            original(connection, {**body, "received": 1}, reply, error)

        self.a._resume = rewind  # type: ignore[method-assign]
        self.publish(4)
        self.pump()
        self.assertEqual(self.added(), [1, 2, 3, 4])

    def test_gap_gives_resynchronised_then_fresh_snapshots(self) -> None:
        """When the buffer lost frames: resumed(gap), resynchronised, then the snapshot frames."""
        self.a.buffer_frames = 2
        self.publish(1)
        self.pump()
        self.a.cut()
        self.publish(2, 3, 4)  # 2 falls out of the buffer
        self.pump()
        self.assertEqual(self.kinds(), ["disconnected", "resumed", "resynchronised"])
        self.assertTrue(self.events[1].gap)
        self.assertEqual(self.events[2].reason, "gap")
        name, reset = self.seen[-1]
        self.assertEqual((name, reset["reset"]), ("QueueChanged", True))
        self.assertEqual([i["n"] for i in reset["interactions"]], [1, 2, 3, 4])
        self.publish(5)
        self.pump()
        self.assertEqual(self.added(), [1, 5])

    def test_resume_retries_with_backoff_while_the_bridge_is_unreachable(self) -> None:
        """Refused dials are retried after 1 s and 2 s; the third attempt resumes."""
        self.a.up = False
        self.a.cut()
        self.pump()
        self.assertEqual(self.site.dialed, ["a.example:3952"])
        self.clock.advance(1)
        self.assertEqual(len(self.site.dialed), 2)
        self.a.up = True
        self.publish(1)
        self.clock.advance(1.9)
        self.assertEqual(self.keeper.state, State.RESUMING)
        self.clock.advance(0.1)
        self.assertEqual(self.keeper.state, State.CONNECTED)
        self.assertEqual(self.added(), [1])
        self.assertEqual(self.site.dialed, ["a.example:3952"] * 3)


class FallbackTests(KeeperCase):
    def fallback(self, answer: str) -> None:
        self.a.resume_answer = answer
        self.publish(1)
        self.pump()
        self.a.cut()
        self.publish(2)  # lost with the old session
        self.pump()

    def test_unknown_session_falls_back_to_a_fresh_logon_with_watches(self) -> None:
        """unknown-session: CreateSession by the reconnect order, then WatchQueue again."""
        self.fallback("unknown-session")
        self.assertEqual(self.keeper.state, State.CONNECTED)
        self.assertEqual(self.a.requests[-3:], ["ResumeSession", "CreateSession", "WatchQueue"])
        self.assertEqual(self.kinds(), ["disconnected", "relogged", "resynchronised"])
        snapshots = self.events[-1].snapshots
        self.assertEqual([i["n"] for i in snapshots["queue:Sales"]["interactions"]], [1, 2])
        self.assertEqual(self.events[-1].reason, "relogged")
        self.assertNotEqual(self.keeper.session_id, self.reply["sessionId"])
        self.publish(3)
        self.pump()
        self.assertEqual(self.added(), [1, 3])

    def test_bad_resume_token_falls_back_without_retrying_resume(self) -> None:
        """logon-failed/bad-resume-token: one ResumeSession only, then a fresh logon."""
        self.fallback("bad-resume-token")
        self.assertEqual(self.a.requests.count("ResumeSession"), 1)
        self.assertEqual(self.keeper.state, State.CONNECTED)
        self.assertEqual(self.kinds()[-2:], ["relogged", "resynchronised"])

    def test_lingering_session_expired_falls_back(self) -> None:
        """After the linger time the session is gone: resume says unknown-session, relogon."""
        self.a.up = False
        self.a.cut()
        self.pump()
        self.advance(121)  # every resume attempt refused; the session has expired
        self.a.up = True
        self.advance(60)
        self.assertEqual(self.keeper.state, State.CONNECTED)
        self.assertEqual(self.keeper.watches.topics, ["queue:Sales"])
        self.assertIn("CreateSession", self.a.requests + self.b.requests)

    def test_notifications_during_restore_follow_the_snapshots(self) -> None:
        """Events of the new session that come before resynchronised are held until after it."""
        order: list[str] = []
        self.keeper.add_event_listener(lambda e: order.append(e.kind))
        self.keeper.add_listener(lambda name, frame: order.append(name))
        self.a.resume_answer = "unknown-session"
        original = self.a.handle

        def publish_early(connection: Any, frame: Frame) -> None:
            original(connection, frame)
            if frame.parsed().get("queue") == "Sales" and frame.event_id == 1:
                self.publish(9)  # right after the WatchQueue reply is written

        self.a.handle = publish_early  # type: ignore[method-assign]
        self.a.cut()
        self.pump()
        self.assertEqual(order, ["disconnected", "relogged", "resynchronised", "QueueChanged"])

    def test_session_terminated_logout_ends_without_reconnecting(self) -> None:
        """SessionTerminated {logout} then a close: ended, nothing dialed, requests fail."""
        from smbridge.codec.catalog import SESSION_TERMINATED

        self.a.notify(self.session(), SESSION_TERMINATED, {"reason": "logout"})
        self.pump()
        self.a.cut()
        self.pump()
        self.assertEqual(self.keeper.state, State.ENDED)
        self.assertEqual(self.events[-1].reason, "terminated:logout")
        self.assertEqual(self.site.dialed, [])
        failure = self.failureResultOf(self.keeper.watch_queue("X"), ClientError)
        self.assertEqual(failure.value.code, "session-ended")

    def test_session_terminated_shutdown_logs_on_afresh(self) -> None:
        """SessionTerminated {shutdown}: no resume, a fresh logon by the reconnect order."""
        from smbridge.codec.catalog import SESSION_TERMINATED

        self.a.up = False  # shutting down: no new connections
        self.a.notify(self.session(), SESSION_TERMINATED, {"reason": "shutdown"})
        self.pump()
        self.advance(1 + 2 + 4)  # the top group (a) three times, then the full list
        self.assertEqual(self.keeper.state, State.CONNECTED)
        self.assertEqual(self.site.dialed, ["a.example:3952"] * 4 + ["b.example:3952"])
        self.assertEqual(self.keeper.server["name"], "b")  # type: ignore[index]
        self.assertNotIn("ResumeSession", self.a.requests)
        self.assertEqual(self.b.requests, ["CreateSession", "WatchQueue"])

    def test_unanswered_heartbeat_drops_the_connection_and_resumes(self) -> None:
        """A connection that goes silent: the heartbeat times out, the keeper resumes."""
        self.a.connections[-1].silent = True
        self.publish(1)
        self.advance(30)  # the heartbeat goes out and gets no answer
        self.assertEqual(self.keeper.state, State.CONNECTED)
        self.assertEqual(self.added(), [])
        self.advance(60)
        self.assertEqual(self.keeper.state, State.CONNECTED)
        self.assertEqual(self.kinds(), ["disconnected", "resumed"])
        self.assertEqual(self.added(), [1])

    def test_unanswered_resume_times_out_and_is_tried_again(self) -> None:
        """A ResumeSession the bridge never answers fails after request_timeout; the next works."""
        original = self.site.dial

        def silent_once(target: dict[str, Any]) -> Any:
            d = original(target)
            if len(self.site.dialed) == 1:
                self.a.connections[-1].silent = True
            return d

        self.keeper._dial = silent_once
        self.publish(1)
        self.a.cut()
        self.pump()
        self.assertEqual(self.keeper.state, State.RESUMING)
        self.advance(30)  # request_timeout; then the next attempt after 1 s
        self.advance(1)
        self.assertEqual(self.keeper.state, State.CONNECTED)
        self.assertEqual(self.site.dialed, ["a.example:3952"] * 2)
        self.assertEqual(self.kinds(), ["disconnected", "resumed"])
        self.assertEqual(self.added(), [1])

    def test_requests_wait_while_reconnecting(self) -> None:
        """A request made while resuming is sent once the session is back."""
        self.a.up = False
        self.a.cut()
        self.pump()
        d = self.keeper.request((171, 1), {"status": "Away"})
        self.assertNoResult(d)
        self.a.up = True
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(d), {})
        self.assertEqual(self.a.requests[-1], "SetStatus")

    def test_logoff_stops_reconnecting(self) -> None:
        """logoff while waiting to resume: ended, the pending retry never dials."""
        self.a.up = False
        self.a.cut()
        self.pump()
        self.successResultOf(self.keeper.logoff())
        self.clock.advance(100)
        self.assertEqual(self.site.dialed, ["a.example:3952"])
        self.assertEqual((self.keeper.state, self.events[-1].reason), (State.ENDED, "logoff"))

    def test_resume_token_and_password_are_never_logged(self) -> None:
        """No log event of a resume or fresh logon carries the token or the password."""
        observer = EventLoggingObserver()
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        token = self.session().token
        self.fallback("unknown-session")
        text = repr([dict(e) for e in observer])
        self.assertIn("keeper.relogged", text)
        self.assertNotIn(token, text)
        self.assertNotIn("'demo'", text)


class BridgeClientResumeTests(SynchronousTestCase):
    """BridgeClient's own pieces: the notification count and ResumeSession on a new connection."""

    def connection(self) -> tuple[Any, Any, Any]:
        from twisted.internet.testing import StringTransport

        from smbridge.client import BridgeClient, BridgeProtocol

        transport = StringTransport()
        protocol = BridgeProtocol()
        protocol.makeConnection(transport)
        return BridgeClient(protocol, Clock()), protocol, transport

    def test_received_counts_notifications_of_the_session_only(self) -> None:
        """Notifications before the logon are not counted; after it each one is."""
        from smbridge.codec import Decoder, Kind, encode
        from smbridge.codec.catalog import QUEUE_CHANGED

        client, protocol, transport = self.connection()
        note = encode(Kind.NOTIFICATION, *QUEUE_CHANGED, 0, {"queue": "Q"})
        protocol.dataReceived(note)
        d = client.logon("alice", "pw")
        (frame,) = Decoder().feed(transport.value())
        reply = {"sessionId": "s1", "resumeToken": "tok", "heartbeatInterval": 30}
        protocol.dataReceived(
            encode(Kind.RESPONSE, frame.object_type, frame.event_id, frame.request_id, reply)
            + note
            + note
        )
        self.successResultOf(d)
        self.assertEqual(client.received, 2)
        state = client.resume_state
        self.assertEqual((state.session_id, state.resume_token, state.received), ("s1", "tok", 2))
        self.assertNotIn("tok", repr(state))

    def test_resume_continues_the_count_from_position(self) -> None:
        """ResumeSession is sent with the state; the reply's position becomes the count.

        The reply and the replayed frame behind it are fed all at once and byte by byte.
        """
        from smbridge.client.session import ResumeState
        from smbridge.codec import Decoder, Kind, encode
        from smbridge.codec.catalog import QUEUE_CHANGED, RESUME_SESSION

        for one_byte_at_a_time in (False, True):
            client, protocol, transport = self.connection()
            d = client.resume(ResumeState("s1", "tok", 7))
            (frame,) = Decoder().feed(transport.value())
            self.assertEqual((frame.object_type, frame.event_id), RESUME_SESSION)
            self.assertEqual(
                frame.parsed(), {"sessionId": "s1", "resumeToken": "tok", "received": 7}
            )
            reply = {"sessionId": "s1", "resumed": True, "gap": False, "position": 5}
            note = encode(Kind.NOTIFICATION, *QUEUE_CHANGED, 0, {"queue": "Q"})
            data = encode(Kind.RESPONSE, *RESUME_SESSION, frame.request_id, reply) + note
            chunks = [data[i : i + 1] for i in range(len(data))] if one_byte_at_a_time else [data]
            for chunk in chunks:
                protocol.dataReceived(chunk)
            self.assertEqual(self.successResultOf(d)["position"], 5)
            self.assertEqual((client.session_id, client.received), ("s1", 6))
            self.assertEqual(client.resume_state.resume_token, "tok")  # type: ignore[union-attr]

    def test_resume_refused_leaves_no_session(self) -> None:
        """unknown-session fails the Deferred with that code and opens no session."""
        from smbridge.client.session import ResumeState
        from smbridge.codec import Decoder, encode_error

        client, protocol, transport = self.connection()
        d = client.resume(ResumeState("s1", "tok", 0))
        (frame,) = Decoder().feed(transport.value())
        protocol.dataReceived(encode_error(168, 5, frame.request_id, "unknown-session", "gone"))
        self.assertEqual(self.failureResultOf(d, ClientError).value.code, "unknown-session")
        self.assertIsNone(client.session_id)
