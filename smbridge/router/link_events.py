"""What the upstream link tells the Router: link up, switchover, notifications.

The link coming (back) up announces the live sessions and follows the server
parameters; a switchover is told to every session, with fresh snapshots once the
topics are re-subscribed (PROTOCOL §4.6); the Notifier's notifications are the
roster, the accept mode, or topic events for the fan-out.
"""

from __future__ import annotations

from typing import Any

from smbridge.codec import Frame, Kind, encode
from smbridge.codec.catalog import LINK_ROSTER_CHANGED, LINK_SET_ACCEPT, SWITCHOVER
from smbridge.router.session_requests import SessionRequests
from smbridge.topics import PARAMETERS_TOPIC, user_topic


class LinkEvents(SessionRequests):
    """The link's events: up, switchover, and the Notifier's notifications."""

    def _link_up(self) -> None:
        """The link came (back) up: announce live sessions, follow parameters, warm the cache.

        The Notifier forgets a bridge's sessions with the link that reported them.
        """
        for session in self.registry:
            self._announce(session)
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
        for session in self.registry:
            names = session.topics | {user_topic(session.info.user_id)}
            body = {
                "phase": "completed",
                "cic": cic,
                "snapshots": self.fanout.snapshots(session, names),
            }
            session.send(encode(Kind.NOTIFICATION, *SWITCHOVER, 0, body))
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
        if key == LINK_ROSTER_CHANGED:
            self.roster_changed(frame.parsed())
        elif key == LINK_SET_ACCEPT:
            self.set_accept_mode(str(frame.parsed().get("accept")))
        else:
            self.fanout.event(frame)
