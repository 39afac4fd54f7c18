"""Domain exceptions; each maps to one stable kebab-case error code on the wire."""

from __future__ import annotations

from typing import Any


class ProtocolError(Exception):
    """A request that fails with an ``error`` frame of ``code``.

    ``extra`` fields are added to the error payload (``reason``, ``retryable``…).
    """

    code = "internal-error"

    def __init__(self, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.extra = extra

    def payload(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.extra}


class BadRequest(ProtocolError):
    code = "bad-request"


class NoSession(ProtocolError):
    code = "no-session"


class LogonFailed(ProtocolError):
    """Wrong password, unknown user or invalid station: clients must not try elsewhere."""

    code = "logon-failed"


class SessionTimeoutTooSmall(ProtocolError):
    code = "session-timeout-too-small"


class UpstreamUnavailable(ProtocolError):
    """The Notifier link is down or dropped while the request was in flight."""

    code = "upstream-unavailable"

    def __init__(self, message: str = "the Notifier is not reachable", **extra: Any) -> None:
        super().__init__(message, retryable=True, **extra)


class NotFound(ProtocolError):
    code = "not-found"


class UpstreamError(ProtocolError):
    """An ``error`` frame the Notifier sent, relayed with its own code."""

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> UpstreamError:
        body = dict(body)
        code = str(body.pop("code", "upstream-error"))
        message = str(body.pop("message", "the Notifier refused the request"))
        return cls(message, code=code, **body)
