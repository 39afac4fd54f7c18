"""The session hook (Glacier2's SessionManager): create/destroy, refusals, timeouts, filters."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer

from smbridge.codec import Kind
from smbridge.codec import catalog as c
from smbridge.session.control import SessionControl
from smbridge.session.hook import CannotCreateSession, HookRunner, load_hook
from smbridge.testing import RouterHarness

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


class Recording:
    """A hook that records calls and answers as told."""

    def __init__(self, answer: Any = None) -> None:
        self.answer = answer
        self.created: list[str] = []
        self.destroyed: list[tuple[str, str]] = []
        self.pending: list[defer.Deferred[None]] = []
        self.restrict: Any = None
        self.destroy_error: Exception | None = None

    def create(self, info: Any, control: SessionControl) -> Any:
        self.created.append(info.user_id)
        if self.restrict is not None:
            self.restrict(control)
        if self.answer == "defer":
            d: defer.Deferred[None] = defer.Deferred()
            self.pending.append(d)
            return d
        if isinstance(self.answer, Exception):
            raise self.answer
        return None

    def destroy(self, session: Any, reason: str) -> None:
        self.destroyed.append((session.id, reason))
        if self.destroy_error is not None:
            raise self.destroy_error


def harness(hook: Any, timeout: float = 5.0) -> RouterHarness:
    h = RouterHarness()
    h.router.hook = HookRunner(hook, h.clock, timeout)
    return h


def start_logon(h: RouterHarness, user: str = "agent1") -> tuple[Any, Any]:
    conn, t = h.client()
    h.send(conn, c.CREATE_SESSION, 1, {"user": user, "password": "demo"})
    (auth,) = [f for f in h.upstream() if (f.object_type, f.event_id) == c.LINK_AUTHENTICATE]
    h.notifier.answer(
        auth, {"user": {"id": user, "workgroups": ["Sales"]}, "location": "Indianapolis"}
    )
    return conn, t


def finish_logon(h: RouterHarness, conn: Any, t: Any, user: str = "agent1") -> dict[str, Any]:
    for frame in h.upstream():
        if (frame.object_type, frame.event_id) == c.LINK_SUBSCRIBE:
            h.serve(frame, {"user": user, "interactions": []})
    (reply,) = h.received(t)
    body: dict[str, Any] = reply.parsed()
    return body


def test_refusal_reaches_the_client_and_creates_nothing():
    """CannotCreateSession(reason) becomes error cannot-create-session with that reason."""
    hook = Recording(CannotCreateSession("no-licence"))
    h = harness(hook)
    conn, t = start_logon(h)
    (reply,) = h.received(t)
    body = reply.parsed()
    assert reply.kind == Kind.ERROR
    assert (body["code"], body["reason"]) == ("cannot-create-session", "no-licence")
    assert len(h.registry) == 0 and conn.session is None and hook.destroyed == []
    assert h.upstream() == []  # no SessionOpened, no user subscription


@pytest.mark.parametrize(
    ("answer", "reason"), [(RuntimeError("bug"), "hook-failed"), ("defer", "hook-timeout")]
)
def test_raising_or_hanging_hook_refuses_without_leaking(answer, reason):
    """A hook that raises or does not answer in time refuses the session; nothing is left."""
    hook = Recording(answer)
    h = harness(hook, timeout=5.0)
    conn, t = start_logon(h)
    if answer == "defer":
        assert h.received(t) == []
        h.clock.advance(5)
    (reply,) = h.received(t)
    assert reply.parsed()["code"] == "cannot-create-session"
    assert reply.parsed()["reason"] == reason
    assert len(h.registry) == 0 and h.clock.getDelayedCalls() == []
    if answer == "defer":
        hook.pending[0].callback(None)  # a late answer changes nothing
        assert len(h.registry) == 0 and h.received(t) == []
    assert hook.created == ["agent1"] and hook.destroyed == []


def test_deferred_accept_creates_and_destroy_follows_every_ending():
    """A hook answering later creates the session; destroy is called once per ending."""
    hook = Recording("defer")
    h = harness(hook)
    endings = []
    # logout
    conn, t = start_logon(h, "u1")
    hook.pending[-1].callback(None)
    reply = finish_logon(h, conn, t, "u1")
    h.send(conn, c.DESTROY_SESSION, 2)
    endings.append((reply["sessionId"], "logout"))
    # dropped and not resumed
    conn, t = start_logon(h, "u2")
    hook.pending[-1].callback(None)
    reply = finish_logon(h, conn, t, "u2")
    conn.connectionLost(None)
    h.clock.advance(h.registry.linger)
    endings.append((reply["sessionId"], "disconnected"))
    # expired
    conn, t = start_logon(h, "u3")
    hook.pending[-1].callback(None)
    reply = finish_logon(h, conn, t, "u3")
    h.registry.get(reply["sessionId"]).timer.deadline = h.clock.seconds()
    h.clock.advance(1800)
    endings.append((reply["sessionId"], "expired"))
    # shutdown
    conn, t = start_logon(h, "u4")
    hook.pending[-1].callback(None)
    reply = finish_logon(h, conn, t, "u4")
    h.router.shutdown()
    endings.append((reply["sessionId"], "shutdown"))
    assert hook.destroyed == endings and hook.created == ["u1", "u2", "u3", "u4"]
    assert h.router.hook is not None and h.router.hook.pending_destroys == 0


def test_connection_dropped_while_hook_decides_still_gets_destroy():
    """The hook accepted but the client left meanwhile: the session is destroyed at once."""
    hook = Recording("defer")
    h = harness(hook)
    conn, t = start_logon(h)
    conn.connectionLost(None)
    hook.pending[0].callback(None)
    assert len(h.registry) == 0 and [r for _, r in hook.destroyed] == ["unexpected"]


def test_destroy_errors_are_logged_not_raised():
    """A destroy that raises is logged; the session still ends and nothing is pending."""
    hook = Recording()
    hook.destroy_error = RuntimeError("destroy bug")
    h = harness(hook)
    conn, t = start_logon(h)
    reply = finish_logon(h, conn, t)
    h.send(conn, c.DESTROY_SESSION, 2)
    assert h.registry.get(reply["sessionId"]) is None
    assert hook.destroyed == [(reply["sessionId"], "logout")]
    assert h.router.hook.pending_destroys == 0


def test_control_restrictions_are_enforced_with_forbidden():
    """Watches and requests outside what the hook allowed get error forbidden."""
    hook = Recording()

    def restrict(control: SessionControl) -> None:
        control.allow_watch("queue", ["Sales"])
        control.allow_requests(["WatchQueue", "SetStatus"])

    hook.restrict = restrict
    h = harness(hook)
    conn, t = start_logon(h)
    finish_logon(h, conn, t)
    h.send(conn, c.WATCH_QUEUE, 3, {"queue": "Support"})
    h.send(conn, c.MAKE_CALL, 4, {"target": "1001"})
    h.send(conn, c.HEARTBEAT, 5)
    frames = h.received(t)
    assert [(f.request_id, f.kind) for f in frames] == [
        (3, Kind.ERROR),
        (4, Kind.ERROR),
        (5, Kind.RESPONSE),
    ]
    assert {f.parsed()["code"] for f in frames[:2]} == {"forbidden"}
    assert h.upstream() == []  # nothing reached the Notifier
    h.send(conn, c.WATCH_QUEUE, 6, {"queue": "Sales"})
    h.send(conn, c.SET_STATUS, 7, {"status": "Away"})
    kinds = [(f.object_type, f.event_id) for f in h.upstream()]
    assert kinds == [c.LINK_SUBSCRIBE, c.SET_STATUS]


def test_load_hook_by_dotted_name(monkeypatch):
    """A class is instantiated; bad names are ValueErrors saying what is wrong."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    hook = load_hook("hooks.WorkgroupQueues")
    assert type(hook).__name__ == "WorkgroupQueues"
    for bad in ("nodots", "hooks.Missing", "no_such_module_xyz.Hook", "sys.path"):
        with pytest.raises(ValueError):
            load_hook(bad)


def test_example_hook_in_docs(monkeypatch):
    """docs/examples/hooks.py blocks, caps and restricts sessions, and counts them back down."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    example = load_hook("hooks.WorkgroupQueues")
    h = harness(example)
    conn, t = start_logon(h, "contractor1")
    (refused,) = h.received(t)
    assert refused.parsed()["reason"] == "blocked-user"
    sessions = []
    for _ in range(3):
        conn, t = start_logon(h, "agent1")
        sessions.append((conn, t, finish_logon(h, conn, t)))
    conn, t = start_logon(h, "agent1")
    (refused,) = h.received(t)
    assert refused.parsed()["reason"] == "too-many-sessions"
    conn, t, _ = sessions[0]
    h.send(conn, c.WATCH_QUEUE, 3, {"queue": "Support"})  # not one of agent1's workgroups
    h.send(conn, c.GET_DIRECTORY, 4, {"name": "Company Directory"})  # not allowed
    assert {f.parsed()["code"] for f in h.received(t)} == {"forbidden"}
    h.send(conn, c.DESTROY_SESSION, 5)
    assert example.live["agent1"] == 2  # type: ignore[attr-defined]
    assert "hooks" in sys.modules
