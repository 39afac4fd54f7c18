"""What the upstream link tells the Router: link up, switchover, notifications.

The link coming (back) up announces the live sessions and follows the server
parameters; a switchover is told to every session, with fresh snapshots once the
topics are re-subscribed (PROTOCOL §4.6); the Notifier's notifications are the
roster, the accept mode, or topic events for the fan-out.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from smbridge.codec import Frame, Kind, encode
from smbridge.codec.catalog import (
    LINK_ROSTER_CHANGED,
    LINK_SET_ACCEPT,
    LINK_TENANTS_CHANGED,
    SWITCHOVER,
)
from smbridge.histograms import Timings
from smbridge.router.continued import SharedSnapshots, completed_frames
from smbridge.router.resume import reset_frames
from smbridge.router.session_requests import SessionRequests
from smbridge.topics import PARAMETERS_TOPIC, user_topic


class LinkEvents(SessionRequests):
    """The link's events: up, switchover, and the Notifier's notifications."""

    timings: Timings  # the bridge's timing histograms (set by Router)

    def _link_up(self) -> None:
        """The link came (back) up: announce live sessions, follow parameters, warm the cache.

        The Notifier forgets a bridge's sessions with the link that reported them.
        """
        for session in self.registry:
            self._announce(session)
        self.watches.tenancy.set_limits(self.upstream.registered.get("tenants"))
        self._parameters_changed()
        if PARAMETERS_TOPIC not in self.fanout.topics:
            self.fanout.watch(PARAMETERS_TOPIC, None).addCallbacks(
                lambda _: self._parameters_changed(),
                lambda f: self.log.warn(
                    "Not following server parameters: {error}",
                    error=f.getErrorMessage(),
                    event="router.parameters_unavailable",
                ),
            )

    def _switchover(self, phase: str, cic: Any) -> None:
        """Tell every session; once re-subscribed, send each its fresh snapshots (4.6)."""
        if phase == "started":
            notice = encode(Kind.NOTIFICATION, *SWITCHOVER, 0, {"phase": phase, "cic": cic})
            for session in self.registry:
                session.send(notice)
            return
        self.fanout.resubscribed.addCallback(lambda _: self._switched(cic))

    def _switched(self, cic: Any) -> None:
        count = 0
        shared: SharedSnapshots = {}  # a large snapshot in pieces after the notice (continued.py)
        bound = self.resumer.piece_bytes
        for session in self.registry:
            names = session.topics | {user_topic(session.info.user_id)}
            resets = partial(reset_frames, bound=bound)
            for data in completed_frames(self.fanout, session, names, cic, resets, shared, bound):
                session.send(data)
            self._ha_switched.add(session.id)
            count += 1
        self.log.info(
            "Told {sessions} session(s) about the switchover to {cic}",
            sessions=count,
            cic=cic,
            event="router.switchover",
        )

    def _upstream_notification(self, frame: Frame) -> None:
        key = (frame.object_type, frame.event_id)
        if key in (LINK_ROSTER_CHANGED, LINK_SET_ACCEPT, LINK_TENANTS_CHANGED):
            self.fanout.unstage()  # the events before it reach every session first
        if key == LINK_ROSTER_CHANGED:
            self.roster_changed(frame.parsed())
        elif key == LINK_SET_ACCEPT:
            self.set_accept_mode(str(frame.parsed().get("accept")))
        elif key == LINK_TENANTS_CHANGED:  # the tenants' limits (router/tenancy.py)
            self.watches.tenancy.set_limits(frame.parsed().get("tenants"))
        else:
            self.fanout.event(frame)
            # Once per event, after its bytes were handed to every watcher's connection.
            self.timings.published(frame.body)
