"""The I/O behind :class:`~smbridge.notifier.pair.Pair`: probe the peer, tell it its role.

The probe is an application-level request: ``GET /api/ping`` on the peer's
control API (``--peer-control``), answered by the peer's reactor with its role,
so a crashed process (connection refused) and a frozen one (SIGSTOP, a stalled
reactor: its kernel still accepts the connection, but nothing answers) both fail
it; :class:`~smbridge.notifier.pair.Pair` bounds each probe with its timeout.
Without ``--peer-control`` the probe falls back to a TCP connect to the peer's
link port, which only sees a crash (the tap warns). Roles travel over the peer's
control API (``POST /api/role``), and so do the halves of the pair's one roster
(``POST /api/pair/roster``, notifier/pair_roster.py); the control API listens on
localhost or a management network, as it always does.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory, Protocol


class _Touch(Protocol):
    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.abortConnection()  # type: ignore[attr-defined]


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[V6]:PORT``) -> (host, port); ValueError when malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


class PeerClient:
    """Reach the other Notifier of the pair."""

    def __init__(
        self, reactor: Any, address: str, control_url: str | None, timeout: float = 2.0
    ) -> None:
        self.reactor = reactor
        self.host, self.port = split_address(address)
        self.control_url = control_url.rstrip("/") if control_url else None
        self.timeout = timeout

    def probe(self) -> defer.Deferred[Any]:
        """Fire with the peer's ``/api/ping`` answer (its role); fail when it does not answer.

        Without a control URL: fire when the peer's link port accepts a connection.
        """
        if self.control_url is not None:
            return self._get("/api/ping")
        endpoint = HostnameEndpoint(self.reactor, self.host, self.port, timeout=self.timeout)
        d: defer.Deferred[Any] = endpoint.connect(Factory.forProtocol(_Touch))
        return d

    def tell_role(self, role: str) -> defer.Deferred[Any]:
        """Ask the peer to take ``role`` through its control API."""
        return self._post("/api/role", {"role": role})

    def exchange_roster(self, half: dict[str, Any]) -> defer.Deferred[Any]:
        """Send this side's half of the pair's roster; fire with the peer's half."""
        return self._post("/api/pair/roster", half)

    def _get(self, path: str) -> defer.Deferred[Any]:
        """GET the peer's control API; fire with the JSON answer of a 200."""
        return self._request("GET", path, None)

    def _post(self, path: str, body: dict[str, Any]) -> defer.Deferred[Any]:
        """POST JSON to the peer's control API; fire with the JSON answer of a 200."""
        return self._request("POST", path, body)

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> defer.Deferred[Any]:
        if self.control_url is None:
            return defer.fail(RuntimeError("no --peer-control given"))
        import treq
        from twisted.web.client import HTTPConnectionPool

        pool = HTTPConnectionPool(self.reactor, persistent=False)
        extra: dict[str, Any] = {} if body is None else {"json": body}
        d: defer.Deferred[Any] = treq.request(
            method, f"{self.control_url}{path}", pool=pool, timeout=self.timeout * 2, **extra
        )

        def checked(response: Any) -> defer.Deferred[Any]:
            if response.code != 200:
                raise RuntimeError(f"the peer answered HTTP {response.code}")
            body: defer.Deferred[Any] = treq.json_content(response)
            return body

        return d.addCallback(checked)
