"""Splicing the session's identity into a forwarded request without re-encoding it."""

from __future__ import annotations

from typing import Any


def with_identity(payload: bytes, body: dict[str, Any], identity: bytes) -> bytes:
    """Return ``payload`` with ``identity`` (``"_session":{...}``) as its last member.

    The payload was already parsed as a JSON object (``body``), so it ends with
    ``}`` after optional white space. Being last, our member wins over any
    ``_session`` a client put in (JSON parsers keep the last duplicate), so a
    client cannot forge another session's identity.
    """
    if not body:
        return b"{" + identity + b"}"
    return payload.rstrip(b" \t\r\n")[:-1] + b"," + identity + b"}"
