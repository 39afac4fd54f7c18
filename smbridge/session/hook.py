"""The session hook (Glacier2's SessionManager): site code that vets and follows sessions.

A hook is any object with ``create(info, control)`` and ``destroy(session, reason)``
(:class:`SessionHook`), loaded by dotted name (``--session-hook pkg.mod.Name``; a
class is instantiated without arguments). ``create`` runs after the credentials and
the timeout are settled and before the session exists; it may return a Deferred,
restrict the session through ``control`` (control.py), or refuse with
:class:`CannotCreateSession`. ``info.certificate`` is the client certificate's
identity (:class:`~smbridge.session.certificate.CertificateIdentity`: subject,
fingerprint, issuer, expiry) when the session logged on with one, as Glacier2's
SSLSessionManager receives SSLInfo; None after a password logon. ``destroy`` is
called exactly once for every session
that was created, however it ends. :class:`HookRunner` bounds both calls with a
timeout so a hook that raises or hangs can neither leak nor wedge sessions.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from smbridge.errors import ProtocolError
from smbridge.session.control import SessionControl

if TYPE_CHECKING:
    from smbridge.session.session import Session, SessionInfo

DEFAULT_HOOK_TIMEOUT = 5.0


class CannotCreateSession(ProtocolError):
    """The hook refused the session; the client gets this code and the ``reason``."""

    code = "cannot-create-session"

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or f"the session was refused: {reason}", reason=reason)
        self.reason = reason


class SessionHook(Protocol):
    def create(self, info: SessionInfo, control: SessionControl) -> object:
        """Vet a new session; return None or a Deferred, or raise CannotCreateSession."""

    def destroy(self, session: Session, reason: str) -> object:
        """The session ended (``reason``: shutdown, logout, expired, unexpected, disconnected)."""


def load_hook(dotted: str) -> SessionHook:
    """Import ``pkg.mod.Name``; a class is instantiated. ValueError says what is wrong."""
    module_name, _, attr = dotted.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"{dotted!r} is not a dotted name (pkg.module.Name)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import {module_name}: {e}") from None
    try:
        found: Any = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"{module_name} has no {attr}") from None
    hook = found() if isinstance(found, type) else found
    for method in ("create", "destroy"):
        if not callable(getattr(hook, method, None)):
            raise ValueError(f"{dotted} has no {method}() method")
    result: SessionHook = hook
    return result


class HookRunner:
    """Calls a hook with a deadline and turns every failure into a bounded outcome."""

    log = Logger()

    def __init__(
        self, hook: SessionHook, clock: IReactorTime, timeout: float = DEFAULT_HOOK_TIMEOUT
    ) -> None:
        self.hook = hook
        self.clock = clock
        self.timeout = timeout
        self.pending_destroys = 0

    def create(self, info: SessionInfo) -> defer.Deferred[SessionControl]:
        """Fire with the session's control, or fail with CannotCreateSession."""
        control = SessionControl()
        d: defer.Deferred[Any] = defer.maybeDeferred(self.hook.create, info, control)
        d.addTimeout(self.timeout, self.clock)

        def refused(failure: Failure) -> Failure:
            if failure.check(CannotCreateSession):
                return failure
            if failure.check(defer.TimeoutError):
                self.log.warn(
                    "Session hook did not answer create for {user} within {timeout}s",
                    user=info.user_id,
                    timeout=self.timeout,
                    event="hook.create_timeout",
                )
                return Failure(CannotCreateSession("hook-timeout"))
            self.log.failure(
                "Session hook create failed for {user}",
                failure=failure,
                user=info.user_id,
                event="hook.create_failed",
            )
            return Failure(CannotCreateSession("hook-failed"))

        return d.addCallbacks(lambda _: control, refused)

    def destroy(self, session: Session, reason: str) -> defer.Deferred[None]:
        """Tell the hook; errors and timeouts are logged, never raised."""
        self.pending_destroys += 1
        d: defer.Deferred[Any] = defer.maybeDeferred(self.hook.destroy, session, reason)
        d.addTimeout(self.timeout, self.clock)

        def failed(failure: Failure) -> None:
            self.log.failure(
                "Session hook destroy failed for {session_id}",
                failure=failure,
                session_id=session.id,
                event="hook.destroy_failed",
            )

        def done(_: object) -> None:
            self.pending_destroys -= 1

        d.addCallbacks(lambda _: None, failed)
        return d.addCallback(done)
