"""The Notifier's tenant policies (smbridge/notifier/tenants.py): sans-IO, on a Clock."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from smbridge.notifier.demo import demo_site_dict
from smbridge.notifier.site import Site
from smbridge.notifier.tenants import TenantPolicies
from smbridge.tenancy import TenantLimit, TenantLimits, TokenBucket

USERS = {"acme": ["a1", "a2", "a3"], "globex": ["g1", "g2"], "default": ["d1"]}
_DATA = demo_site_dict()


def _site(limits: dict[str, TenantLimits]) -> Site:
    data = dict(_DATA)
    hash_ = data["users"][0]["passwordHash"]
    data["users"] = [
        {"id": u, "displayName": u, "extension": str(100 + i), "passwordHash": hash_}
        for i, u in enumerate(u for us in USERS.values() for u in us)
    ]
    data["workgroups"] = []
    data["directories"] = {}
    data["tenants"] = [
        {
            "name": t,
            "users": users if t != "default" else [],
            "limits": _wire(limits.get(t, TenantLimits())),
        }
        for t, users in USERS.items()
    ]
    return Site.from_dict(data)


def _wire(lim: TenantLimits) -> dict[str, object]:
    out = {k: v for k, v in lim.to_wire().items() if v is not None}
    if lim.logon_burst is None:
        out.pop("logonBurst", None)
    return out


def test_sessions_limit_names_tenant_and_limit() -> None:
    """A third session of a tenant limited to two is refused naming tenant, limit and max."""
    clock = Clock()
    p = TenantPolicies(clock, _site({"acme": TenantLimits(sessions=2)}))
    p.opened("b1", "s1", "a1", p.admit("b1", "a1")["reservation"])
    p.admit("b1", "a2")  # reserved, not yet opened: counts
    with pytest.raises(TenantLimit) as e:
        p.admit("b2", "a3")
    assert e.value.payload() == {
        "code": "tenant-limit",
        "message": "tenant 'acme' is at its sessions limit (2): too many sessions",
        "tenant": "acme",
        "limit": "sessions",
        "max": 2,
        "reason": "too many sessions",
    }
    assert p.admit("b1", "g1")["name"] == "globex"  # other tenants unaffected
    assert p.refusals[("acme", "sessions")] == 1


def test_reservation_lapses_and_abandon_releases() -> None:
    """A reservation is released by SessionClosed{reservation} or after its timeout."""
    clock = Clock()
    p = TenantPolicies(clock, _site({"acme": TenantLimits(sessions=1)}), reserve_seconds=10)
    rid = p.admit("b1", "a1")["reservation"]
    with pytest.raises(TenantLimit):
        p.admit("b1", "a2")
    p.closed("b1", reservation=rid)
    p.admit("b1", "a2")
    clock.advance(10)
    assert p.use("acme")["sessions"] == 0
    p.admit("b1", "a3")


def test_link_lost_forgets_its_sessions_only() -> None:
    """A link drop forgets that bridge's sessions; another bridge's stay counted."""
    clock = Clock()
    p = TenantPolicies(clock, _site({"acme": TenantLimits(sessions=2)}))
    p.opened("b1", "s1", "a1", p.admit("b1", "a1")["reservation"])
    p.opened("b2", "s2", "a2", p.admit("b2", "a2")["reservation"])
    p.link_lost("b1")
    assert p.use("acme")["sessions"] == 1
    p.opened("b1", "s1", "a1")  # the bridge announces it again when back
    assert p.use("acme")["sessions"] == 2


def test_lowering_a_limit_keeps_sessions_and_refuses_new() -> None:
    """A lowered limit ends nothing and refuses until use is under it; raising it admits."""
    clock = Clock()
    p = TenantPolicies(clock, _site({"acme": TenantLimits(sessions=3)}))
    for i, u in enumerate(["a1", "a2", "a3"]):
        p.opened("b", f"s{i}", u, p.admit("b", u)["reservation"])
    assert p.set_site(_site({"acme": TenantLimits(sessions=1)})) is True
    assert p.use("acme")["sessions"] == 3
    p.closed("b", "s0")
    with pytest.raises(TenantLimit):
        p.admit("b", "a1")
    p.set_site(_site({"acme": TenantLimits(sessions=5)}))
    assert p.admit("b", "a1")["limits"]["sessions"] == 5


def test_token_bucket_rate_and_burst() -> None:
    """The bucket lets ``burst`` through at once, then ``rate`` per second."""
    b = TokenBucket(2.0, 3, 0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.take(0.5) is True and b.take(0.5) is False
    assert b.take(10.0) is True and b.tokens == 2.0


# --- property: the core against a naive model ---------------------------------------

RATES = st.sampled_from([None, 0.5, 1.0, 2.0, 4.0])
COUNT = st.one_of(st.none(), st.integers(0, 4))


@st.composite
def limits(draw: st.DrawFn) -> TenantLimits:
    rate = draw(RATES)
    return TenantLimits(
        sessions=draw(COUNT),
        sessions_per_user=draw(st.one_of(st.none(), st.integers(1, 3))),
        logons_per_second=rate,
        logon_burst=draw(st.one_of(st.none(), st.integers(1, 3))) if rate else None,
    )


OPS = st.one_of(
    st.tuples(st.just("logon"), st.integers(0, 5), st.integers(0, 1)),
    st.tuples(st.just("open"), st.integers(0, 50), st.booleans()),
    st.tuples(st.just("abandon"), st.integers(0, 50), st.just(0)),
    st.tuples(st.just("close"), st.integers(0, 50), st.just(0)),
    st.tuples(st.just("advance"), st.sampled_from([0.25, 0.5, 1.0, 3.0, 20.0]), st.just(0)),
    st.tuples(st.just("drop"), st.integers(0, 1), st.just(0)),
)
ALL_USERS = [u for us in USERS.values() for u in us]


@dataclass
class Model:
    """Naive: recount everything from lists at every question; a bucket replayed by hand."""

    limits: dict[str, TenantLimits]
    reserve: float
    now: float = 0.0
    pending: list[tuple[str, str, str, float]] = field(default_factory=list)  # rid, owner, user, t
    opened: list[tuple[str, str, str]] = field(default_factory=list)  # sid, owner, user
    takes: dict[str, list[float]] = field(default_factory=dict)

    def tenant(self, user: str) -> str:
        return next(t for t, us in USERS.items() if user in us)

    def live(self) -> list[tuple[str, str, str, float]]:
        return [p for p in self.pending if p[3] + self.reserve > self.now]

    def count(self, tenant: str | None = None, user: str | None = None) -> int:
        users = [u for _, _, u, _ in self.live()] + [u for _, _, u in self.opened]
        return sum(
            1
            for u in users
            if (user is None or u == user) and (tenant is None or self.tenant(u) == tenant)
        )

    def tokens(self, tenant: str) -> float:
        lim = self.limits[tenant]
        assert lim.logons_per_second is not None
        tokens, last = float(lim.burst), 0.0
        for t in self.takes.get(tenant, []):
            tokens = min(lim.burst, tokens + (t - last) * lim.logons_per_second) - 1
            last = t
        return min(lim.burst, tokens + (self.now - last) * lim.logons_per_second)

    def logon(self, user: str) -> str | None:
        t = self.tenant(user)
        lim = self.limits.get(t, TenantLimits())
        if lim.sessions is not None and self.count(tenant=t) >= lim.sessions:
            return "sessions"
        if lim.sessions_per_user is not None and self.count(user=user) >= lim.sessions_per_user:
            return "sessionsPerUser"
        if lim.logons_per_second is not None:
            if self.tokens(t) < 1:
                return "logonsPerSecond"
            self.takes.setdefault(t, []).append(self.now)
        return None


@settings(max_examples=150, deadline=None)
@given(
    st.fixed_dictionaries({"acme": limits(), "globex": limits(), "default": limits()}),
    st.lists(OPS, max_size=60),
)
def test_policies_match_a_naive_model(lims: dict[str, TenantLimits], ops: list) -> None:
    """Under random logons, opens, abandons, logoffs, link drops and time, on a Clock:
    no tenant ever exceeds a limit, and a logon is refused exactly when the naive model
    says one of its tenant's limits is reached (so never while under all of them)."""
    clock = Clock()
    core = TenantPolicies(clock, _site(lims), reserve_seconds=15)
    model = Model(lims, 15)
    sid = 0
    for op, a, b in ops:
        owner = f"bridge{b}"
        if op == "logon":
            user = ALL_USERS[a]
            expected = model.logon(user)
            try:
                rid = core.admit(owner, user)["reservation"]
                got = None
            except TenantLimit as e:
                got = e.limit
            assert got == expected, (op, user)
            if got is None:
                model.pending.append((rid, owner, user, model.now))
        elif op == "open" and model.live():
            rid, owner, user, _ = model.live()[a % len(model.live())]
            sid += 1
            core.opened(owner, f"s{sid}", user, rid if b else None)
            # without an id the core takes that user's oldest reservation on that link
            if not b:
                rid = next(p[0] for p in model.live() if p[1] == owner and p[2] == user)
            model.pending = [p for p in model.pending if p[0] != rid]
            model.opened.append((f"s{sid}", owner, user))
        elif op == "abandon" and model.live():
            rid, owner, _, _ = model.live()[a % len(model.live())]
            core.closed(owner, reservation=rid)
            model.pending = [p for p in model.pending if p[0] != rid]
        elif op == "close" and model.opened:
            s, owner, _ = model.opened.pop(a % len(model.opened))
            core.closed(owner, s)
        elif op == "advance":
            clock.advance(a)
            model.now += a
        elif op == "drop":
            core.link_lost(f"bridge{a}")
            model.pending = [p for p in model.pending if p[1] != f"bridge{a}"]
            model.opened = [o for o in model.opened if o[1] != f"bridge{a}"]
        model.pending = model.live()
        for tenant, lim in lims.items():
            used = core.use(tenant)["sessions"]
            assert used == model.count(tenant=tenant)
            assert lim.sessions is None or used <= lim.sessions
        for user in ALL_USERS:
            per_user = model.count(user=user)
            cap = lims[model.tenant(user)].sessions_per_user
            assert cap is None or per_user <= cap
