"""The Router's roster requests: accept or redirect (PROTOCOL §4.3, docs/roster.md).

The accept mode and its switch, the roster the Notifier sends and its RosterChanged,
whether a new session is taken here or redirected, the roster as a client gets it
(``reach.py``), GetServers and GetResourceUri.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smbridge.codec import Frame, Kind, encode
from smbridge.codec.catalog import LINK_BRIDGE_CHANGED, ROSTER_CHANGED
from smbridge.errors import BadRequest, ProtocolError
from smbridge.resources import Origin
from smbridge.roster.accept import ACCEPT_MODES, Decision, decide
from smbridge.roster.reach import with_uris
from smbridge.roster.selection import Resolved, RuleError, order_roster, parse_rules, rule_for_user
from smbridge.router.fields import text
from smbridge.router.reply import Reply
from smbridge.router.state import RouterState
from smbridge.session.session import Session

if TYPE_CHECKING:
    from smbridge.transports.connection import ClientConnection

MEMO_LOCATIONS = 1024  # resolved rules kept (a site has far fewer locations)


class RosterRequests(RouterState):
    """Accept or redirect, the roster, GetServers and GetResourceUri."""

    # --- accept or redirect (PROTOCOL §4.3, docs/roster.md) --------------------------
    def set_accept_mode(self, mode: str) -> None:
        """Switch the accept mode at run time (``default``, ``all`` or ``maintenance``)."""
        if mode not in ACCEPT_MODES:
            raise BadRequest(f"accept must be one of {', '.join(ACCEPT_MODES)}")
        if mode != self.accept_mode:
            self.log.info(
                "Accept mode {old} -> {mode}",
                old=self.accept_mode,
                mode=mode,
                event="roster.accept_mode",
            )
        self.accept_mode = mode
        # A later re-registration (after a link drop or switchover) reports the new mode,
        # and the Notifier hears of it now, so the roster's ``available`` follows.
        self.upstream.registration["accept"] = mode
        self.upstream.notify(LINK_BRIDGE_CHANGED, {"accept": mode})

    def roster_changed(self, body: dict[str, Any]) -> None:
        """Keep the Notifier's new roster and tell every session (RosterChanged)."""
        roster = body.get("roster")
        if not isinstance(roster, list):
            return
        registered = self.upstream.registered
        registered["roster"] = roster
        if "selectionRule" in body:
            registered["selectionRule"] = body["selectionRule"]
        self.log.info(
            "Roster changed: {available} of {total} bridges available",
            available=sum(1 for e in roster if isinstance(e, dict) and e.get("available")),
            total=len(roster),
            event="roster.changed",
        )
        notices: dict[Origin, bytes] = {}  # one encoding per way in (tunnel URIs differ)
        for session in self.registry:
            notice = notices.get(session.origin)
            if notice is None:
                body = {
                    "roster": self.client_roster(roster, session.origin),
                    "selectionRule": registered.get("selectionRule"),
                }
                notice = notices[session.origin] = encode(
                    Kind.NOTIFICATION, *ROSTER_CHANGED, 0, body
                )
            session.send(notice)

    def accept_state(self) -> tuple[bool, str]:
        """Whether new sessions are taken now, for the status: (accepting, mode or reason).

        The user-dependent check (excluded location) is left out.
        """
        decision = self._decide(Resolved((), frozenset(), True))
        return decision.accept, decision.reason or self.accept_mode

    # The selection rules read from the Notifier's value, and each location's resolved
    # rule, kept while that value is the same object: a logon does not parse them again.
    # The value is replaced whole (Register, RosterChanged), never changed in place.
    _rules: tuple[object, dict[str | None, Resolved]] | None = None

    def user_rule(self, location: str | None) -> Resolved:
        """The resolved selection rule for a user in ``location`` (default rule if unreadable)."""
        data = self.upstream.registered.get("selectionRule")
        memo = self._rules
        if memo is None or memo[0] is not data:
            memo = self._rules = (data, {})
        resolved = memo[1].get(location)
        if resolved is None:
            try:
                rules = parse_rules(data)
            except RuleError:
                rules = parse_rules(None)
            if len(memo[1]) >= MEMO_LOCATIONS:
                memo[1].clear()
            resolved = memo[1][location] = rule_for_user(rules, location)
        return resolved

    def accept_decision(self, location: str | None) -> tuple[Decision, Resolved]:
        """Whether this bridge takes a new session of a user in ``location`` now."""
        rule = self.user_rule(location)
        decision = self._decide(rule)
        return decision, rule

    def _decide(self, rule: Resolved) -> Decision:
        registered = self.upstream.registered
        return decide(
            mode=self.accept_mode,
            kind=self.identity.kind,
            location=self.identity.location,
            own_name=self.identity.name,
            cic_role=str((registered.get("cic") or {}).get("role", "primary")),
            roster=registered.get("roster", []),
            rule=rule,
            loaded=self.loaded(),
        )

    def _accept_or_redirect(self, user: str, conn: ClientConnection, auth: Any) -> None:
        location = auth.get("location") if isinstance(auth, dict) else None
        decision, rule = self.accept_decision(location)
        if decision.accept:
            return
        registered = self.upstream.registered
        others = [e for e in registered.get("roster", []) if e.get("name") != self.identity.name]
        groups = order_roster(others, rule, (), self.rng)
        self.counters.inc("redirects", reason=str(decision.reason))
        self.log.info(
            "Redirecting {user} from {remote}: {reason}",
            user=user,
            remote=conn.remote,
            reason=decision.reason,
            event="session.redirect",
        )
        raise ProtocolError(
            f"this bridge does not take the session ({decision.reason}); try the roster",
            code="redirect",
            reason=decision.reason,
            roster=self.client_roster([e for g in groups for e in g], conn.origin),
            groups=[[e["name"] for e in g] for g in groups],
            selectionRule=registered.get("selectionRule"),
            location=location,
        )

    def client_roster(self, roster: list[Any], origin: Origin) -> Any:
        """``roster`` as a client that came in by ``origin`` gets it (tunnel: with ``uri``)."""
        return with_uris(roster, origin, self.alias_of)

    def _describe(self, origin: Origin) -> dict[str, Any]:
        """The bridge's side of a session reply: this server, the roster, the CIC server."""
        registered = self.upstream.registered
        return {
            "server": self.identity.public(),
            "roster": self.client_roster(registered.get("roster", []), origin),
            "cic": registered.get("cic"),
        }

    def _servers(self, session: Session, frame: Frame) -> Reply:
        registered = self.upstream.registered
        return {
            "roster": self.client_roster(registered.get("roster", []), session.origin),
            "selectionRule": registered.get("selectionRule"),
        }

    def _resource_uri(self, session: Session, frame: Frame) -> Reply:
        body = frame.body or {}
        kind = text(body, "kind")
        path = body.get("path", "")
        if not isinstance(path, str):
            raise BadRequest("path must be a string")
        return {"kind": kind, "path": path, "uri": self.resources.uri(session.origin, kind, path)}
