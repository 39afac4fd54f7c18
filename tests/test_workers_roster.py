"""The Notifier's one record for a bridge of several workers, against a naive model."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from smbridge.notifier.demo import demo_site
from smbridge.notifier.model import Notifier

WORKERS = 3


class Link:
    def send_event(self, sub_id: int, frame: bytes) -> None:
        pass


steps = st.lists(
    st.one_of(
        st.tuples(st.just("register"), st.integers(0, WORKERS - 1)),
        st.tuples(st.just("lose"), st.integers(0, WORKERS - 1)),
        st.tuples(st.just("session"), st.integers(0, WORKERS - 1)),
        st.tuples(st.just("close"), st.integers(0, 50)),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(steps)
def test_one_entry_available_while_any_worker_link_is_up(plan: list[tuple[str, int]]) -> None:
    """Registers, drops, session opens and closes: the record matches the model at each step."""
    n = Notifier(demo_site(), Clock())
    live: dict[int, Link] = {}  # the model: worker -> its live link
    sessions: dict[str, int] = {}  # session id -> worker
    count = 0
    for action, arg in plan:
        if action == "register":
            link = Link()
            body = {"name": "bridge1", "fqdn": "h", "kind": "on-server"}
            n.register({**body, "worker": arg, "workers": WORKERS}, link)
            if arg in live or not live:
                sessions = {s: w for s, w in sessions.items() if w != arg and live}
            live[arg] = link
        elif action == "lose" and arg in live:
            n.link_lost(live.pop(arg))
            sessions = {s: w for s, w in sessions.items() if w != arg}
        elif action == "session" and arg in live:
            count += 1
            sessions[f"s{count}"] = arg
            n.session_opened(live[arg], {"sessionId": f"s{count}"})
        elif action == "close" and f"s{arg}" in sessions:
            n.session_closed(live[sessions.pop(f"s{arg}")], {"sessionId": f"s{arg}"})
        entries = [e for e in n.roster() if e["name"] == "bridge1"]
        assert len(entries) == 1
        assert entries[0]["available"] is bool(live)
        state: dict[str, Any] = {b["name"]: b for b in n.registry.state()}.get("bridge1", {})
        if live:
            assert (state["workersUp"], state["sessions"]) == (len(live), len(sessions))
            assert all(n.is_registered(link) for link in live.values())
