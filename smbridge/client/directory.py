"""Reading a whole directory page by page (GetDirectory paging, docs/protocol.md).

The bridge answers GetDirectory in pages of bounded size: ``{entries, offset,
total, next, more, version}``. :func:`read_directory` follows ``next`` until
``more`` is false and returns ``{name, entries, total, version}`` with every
entry. ``version`` changes whenever the directory changes; if it changes between
two pages the pages do not belong together, and the walk starts again (at most
``tries`` times). The DirectoryChanged events the session receives while it
walks are all reflected in the last walk's pages, and every later one follows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks

from smbridge.client.protocol import ClientError

Request = Callable[[dict[str, Any]], Deferred[dict[str, Any]]]
MAX_PAGES = 100_000  # a walk never asks more pages than this (a misbehaving bridge)


@inlineCallbacks
def read_directory(
    request: Request, name: str, limit: int | None = None, tries: int = 5
) -> Any:  # Deferred[dict[str, Any]]
    """Every entry of directory ``name``, read with ``request(GetDirectory body)``."""
    for _ in range(tries):
        body: dict[str, Any] = {"name": name}
        if limit is not None:
            body["limit"] = limit
        first = yield request(body)
        entries = list(first.get("entries", ()))
        version = first.get("version")
        page, same = first, True
        for _ in range(MAX_PAGES):
            if not page.get("more"):
                break
            page = yield request({**body, "offset": page["next"]})
            if page.get("version") != version:
                same = False
                break
            entries.extend(page.get("entries", ()))
        if same:
            return {
                "name": first.get("name", name),
                "entries": entries,
                "total": first.get("total", len(entries)),
                "version": version,
            }
    raise ClientError(
        "directory-changing",
        f"directory {name!r} changed during each of {tries} reads; try again later",
    )
