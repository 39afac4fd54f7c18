"""Reading request fields with clear errors (each failure names the field).

A text field must be valid Unicode: a lone surrogate (which a JSON ``\\ud800``
escape decodes to) is refused here too, though admission already refuses any
request holding one (``Frame.invalid``).
"""

from __future__ import annotations

from typing import Any

from smbridge.errors import BadRequest


def text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key} must be a non-empty string")
    if not value.isascii() and not _is_unicode(value):
        raise BadRequest(f"{key} is not valid Unicode (a lone surrogate)")
    return value


def _is_unicode(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def optional_text(body: dict[str, Any], key: str) -> str | None:
    return None if body.get(key) is None else text(body, key)


def text_list(body: dict[str, Any], key: str, most: int) -> list[str]:
    """A non-empty list of distinct non-empty strings, at most ``most`` long."""
    value = body.get(key)
    if not isinstance(value, list) or not value:
        raise BadRequest(f"{key} must be a non-empty list of strings")
    if not all(isinstance(v, str) and v for v in value):
        raise BadRequest(f"every item of {key} must be a non-empty string")
    if not all(v.isascii() or _is_unicode(v) for v in value):
        raise BadRequest(f"an item of {key} is not valid Unicode (a lone surrogate)")
    if len(value) > most:
        raise BadRequest(f"{key} has {len(value)} items; at most {most}")
    return list(dict.fromkeys(value))


def limit(body: dict[str, Any], default: int = 50, most: int = 500) -> int:
    value = body.get("limit", default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise BadRequest(f"limit must be a whole number from 1 to {most}")
    return value
