"""Why the Notifier link failed, in words an operator can act on.

``describe`` turns the exception behind a failed attempt (a refused or timed-out
connect, a TLS handshake the bridge or the Notifier rejected, a closed link)
into one line naming the cause and, where it is ours to fix, the option. The
text is stable for the same cause, so the connector can log it once per change
instead of once per retry. Pure: no I/O, no Twisted reactor.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import error as neterror

# OpenSSL reasons that say the Notifier did not take our client certificate.
_PEER_REFUSED = ("alert unknown ca", "alert bad certificate", "alert certificate", "alert access")


def _ssl_reasons(exc: BaseException) -> list[str]:
    """The reason strings of an OpenSSL error (``[(lib, func, reason), ...]``)."""
    reasons: list[str] = []
    for arg in exc.args:
        items = arg if isinstance(arg, list) else [arg]
        for item in items:
            if isinstance(item, tuple) and item:
                reasons.append(str(item[-1]))
            elif item:
                reasons.append(str(item))
    return reasons


def _mismatched(exc: BaseException) -> list[str]:
    """The names (or addresses) a service_identity VerificationError did not find."""
    names = []
    for err in getattr(exc, "errors", []) or []:
        ident: Any = getattr(err, "mismatched_id", None)
        for attr in ("hostname", "ip", "uri", "srv"):
            value = getattr(ident, attr, None)
            if value is not None:
                names.append(value.decode() if isinstance(value, bytes) else str(value))
                break
    return names


def describe(exc: BaseException | None, address: str) -> str:
    """One stable line saying why an attempt on ``address`` failed."""
    if exc is None:
        return "the Notifier closed the link"
    kind = type(exc).__name__
    if kind == "VerificationError":
        names = ", ".join(repr(n) for n in _mismatched(exc)) or "the expected name"
        return (
            f"TLS: the Notifier's certificate at {address} is not valid for {names} "
            "(name mismatch: check --notifier-name)"
        )
    if kind == "Error" and type(exc).__module__.startswith("OpenSSL"):
        reasons = _ssl_reasons(exc)
        text = "; ".join(reasons) or "handshake failed"
        if any("certificate verify failed" in r for r in reasons):
            return (
                f"TLS: the Notifier's certificate at {address} is not trusted "
                f"(certificate verify failed: is it signed by the CA in --ca?): {text}"
            )
        if any(p in r for r in reasons for p in _PEER_REFUSED):
            return (
                f"TLS: the Notifier at {address} refused our certificate "
                f"(--client-cert; is it signed by a CA the Notifier trusts?): {text}"
            )
        return f"TLS handshake with {address} failed: {text}"
    if isinstance(exc, neterror.ConnectionRefusedError):
        return f"cannot connect to {address}: connection refused (is the Notifier listening there?)"
    if isinstance(exc, neterror.TimeoutError | neterror.TCPTimedOutError):
        return f"cannot connect to {address}: timed out"
    if isinstance(exc, neterror.DNSLookupError):
        return f"cannot connect to {address}: the name does not resolve"
    if isinstance(exc, neterror.ConnectError):
        return f"cannot connect to {address}: {_plain(exc)}"
    if isinstance(exc, neterror.ConnectionDone):
        return "the Notifier closed the link"
    if isinstance(exc, neterror.ConnectionLost):
        return f"the link to {address} was lost: {_plain(exc)}"
    return f"{kind}: {exc}"


def _plain(exc: BaseException) -> str:
    text = str(exc).strip().rstrip(".")
    return text or type(exc).__name__


def silent(address: str, seconds: float) -> str:
    """The link was up but the Notifier stopped answering (frozen, stalled or cut off)."""
    return (
        f"the Notifier at {address} stopped answering: nothing heard for {seconds:g} s "
        "while pings were unanswered (frozen or overloaded? --link-dead-after)"
    )


def register_unanswered(address: str, seconds: float) -> str:
    """A new link (TLS handshake and Register) got no answer in time."""
    return (
        f"the Notifier at {address} did not answer Register within {seconds:g} s "
        "(frozen or overloaded? --upstream-timeout)"
    )


def request_timed_out(seconds: float) -> str:
    """The message of the ``upstream-unavailable`` error a timed-out request gets."""
    return f"the Notifier did not answer within {seconds:g} s (--upstream-timeout)"
