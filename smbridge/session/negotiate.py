"""Session timeout negotiation (PROTOCOL §4.2, after GVP's Session-Expires/Min-SE).

Pure functions: the numbers a CreateSession reply carries follow from the policy
and the request alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from smbridge.errors import BadRequest, SessionTimeoutTooSmall

MAX_HEARTBEAT_INTERVAL = 300
IMMINENT_LEAD = 60.0


@dataclass(frozen=True)
class TimeoutPolicy:
    """The configured timeout T, the floor Tmin, and where T came from."""

    timeout: int = 1800
    floor: int = 60
    source: str = "default"  # which level set T (levels.py): the bridge's own setting

    def __post_init__(self) -> None:
        if self.floor < 1 or self.timeout < self.floor:
            raise ValueError(
                f"session timeout {self.timeout} must be at least the floor {self.floor} (>= 1)"
            )


def _optional_seconds(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise BadRequest(f"{name} must be a positive number of seconds")
    return int(value)


def negotiate_timeout(policy: TimeoutPolicy, requested: object, client_floor: object) -> int:
    """Return the session timeout for a request, or raise SessionTimeoutTooSmall.

    - no request: T
    - request below Tmin: refused, the reply names Tmin
    - Tmin <= request <= T: the request
    - request above T: T, or max(client floor, T) when the client sent a floor
    """
    wanted = _optional_seconds("sessionTimeout", requested)
    floor = _optional_seconds("minSessionTimeout", client_floor)
    if wanted is None:
        return policy.timeout
    if wanted < policy.floor:
        raise SessionTimeoutTooSmall(
            f"sessionTimeout {wanted} is below the minimum {policy.floor}",
            minSessionTimeout=policy.floor,
        )
    if wanted <= policy.timeout:
        return wanted
    if floor is not None:
        return max(floor, policy.timeout)
    return policy.timeout


def heartbeat_interval(timeout: int) -> int:
    """How often a client should heartbeat: a third of the timeout, at most 300 s."""
    return max(1, min(timeout // 3, MAX_HEARTBEAT_INTERVAL))


def imminent_lead(timeout: float) -> float:
    """Seconds before expiry that TerminationImminent is sent: 60, or half a short timeout."""
    return min(IMMINENT_LEAD, timeout / 2)
