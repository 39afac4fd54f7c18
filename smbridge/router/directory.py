"""The directory cache and the directory requests served from it.

A cached directory is a pinned fan-out topic (``directory:<name>``): loaded by
subscribing once, kept current by the same DirectoryChanged events that reach
watchers, and never released. Directories named in ``DirectoriestoCacheOnSMStartup``
(pipe-separated) are loaded when the link comes up or the parameter changes; the
others on first request. GetDirectory also makes the session a watcher of the
directory, so it receives DirectoryChanged. Every answer and event is filtered to
what the user may see (visibility.py).

GetDirectory answers in pages (docs/protocol.md, "Large answers"): ``{name, offset,
limit}`` in, ``{name, entries, offset, total, next, more, version}`` out, every
answer at most ``page_bytes`` (256 KiB) of payload however large ``limit`` or the
directory. ``version`` changes with every change to the directory, so a client
that reads page after page knows its pages belong together. Each scope's entries
are encoded once per version; the pages a client walks by ``next`` are encoded
once per version too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from smbridge.codec import Frame
from smbridge.codec.pieces import PIECE_BYTES, SLOT, Template, encode_value
from smbridge.errors import BadRequest, ProtocolError
from smbridge.router.fanout import FanOut
from smbridge.router.fields import limit, text
from smbridge.router.reply import EncodedReply, Reply
from smbridge.router.visibility import Scope, visible_entries
from smbridge.router.watches import Watches
from smbridge.session.session import Session
from smbridge.topics import ItemSetState, directory_topic

STARTUP_PARAMETER = "DirectoriestoCacheOnSMStartup"
TRANSFER_PARAMETER = "TransferDialogDirectories"
COMPANY_DIRECTORY = "Company Directory"
SEARCH_FIELDS = ("displayName", "id", "extension")


def split_names(value: object) -> list[str]:
    """Split a pipe-separated server parameter into names."""
    if not isinstance(value, str):
        return []
    return [part.strip() for part in value.split("|") if part.strip()]


def _whole_number(body: dict[str, Any], key: str, default: int | None, least: int) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise BadRequest(f"{key} must be a whole number from {least}")
    return value


class _Pages:
    """One directory as one scope sees it, each entry encoded once (until it changes)."""

    __slots__ = ("encoded", "replies")

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.encoded = [encode_value(e) for e in entries]
        self.replies: dict[int, EncodedReply] = {}  # offset -> the page a walk by next reads


def page(
    name: str, encoded: list[bytes], offset: int, most: int | None, version: int, bound: int
) -> bytes:
    """The GetDirectory page from ``offset``: at most ``most`` entries and ``bound`` bytes.

    A page holds at least one entry when any is left, so walking ``next`` always ends.
    """
    total = len(encoded)

    def shape(next_: int | None, more: bool) -> dict[str, Any]:
        return {
            "name": name,
            "entries": SLOT,
            "offset": offset,
            "total": total,
            "next": next_,
            "more": more,
            "version": version,
        }

    room = bound - max(Template(shape(None, False)).overhead, Template(shape(total, True)).overhead)
    end, used = min(offset, total), -1
    stop = total if most is None else min(total, offset + most)
    while end < stop:
        cost = used + 1 + len(encoded[end])
        if cost > room and end > offset:
            break
        used, end = cost, end + 1
    more = end < total
    return Template(shape(end if more else None, more)).fill(encoded[offset:end])


def matches(entry: dict[str, Any], query: str) -> bool:
    """Case-insensitive substring match on display name, id or extension."""
    return any(query in str(entry.get(field, "")).lower() for field in SEARCH_FIELDS)


class Directories:
    log = Logger()

    def __init__(
        self,
        fanout: FanOut,
        watches: Watches,
        parameters: Callable[[], dict[str, Any]],
        scope: Callable[[Session], Scope],
    ) -> None:
        self.fanout = fanout
        self.watches = watches
        self.parameters = parameters
        self.scope = scope
        # GetDirectory pages, encoded once per (directory, scope) until the next change:
        # thousands of clients load the same Company Directory.
        self._encoded: dict[tuple[str, Scope], _Pages] = {}
        self._versions: dict[str, int] = {}  # name -> changes seen (a page's "version")
        self._states: dict[str, ItemSetState] = {}  # name -> the copy its pages come from
        self._watched: set[str] = set()
        self.page_bytes = PIECE_BYTES  # the largest GetDirectory page payload

    def get(self, name: str) -> defer.Deferred[dict[str, Any]]:
        """Fire with ``{name, entries}`` (everything), loading the directory on first use."""
        topic = directory_topic(name)
        if topic not in self._watched:  # forget encoded answers when the directory changes
            self._watched.add(topic)
            self.fanout.on_change(topic, lambda change: self._forget(name))
        state = self.fanout.state(topic)
        if state is not None:
            return defer.succeed(state.snapshot())
        return self.fanout.watch(topic, None)

    def _forget(self, name: str) -> None:
        self._versions[name] = self._versions.get(name, 0) + 1
        for key in [k for k in self._encoded if k[0] == name]:
            del self._encoded[key]

    def _page(self, name: str, scope: Scope, offset: int, most: int | None) -> EncodedReply:
        state = self.fanout.state(directory_topic(name))
        if not isinstance(state, ItemSetState):
            raise ProtocolError(f"directory {name} is not loaded", code="upstream-unavailable")
        if self._states.get(name) is not state:
            # A new copy (the link came back and the directory was subscribed again).
            if name in self._states:
                self._forget(name)
            self._states[name] = state
        key = (name, scope)
        pages = self._encoded.get(key)
        if pages is None:
            entries = visible_entries(scope, list(state.items.values()))
            pages = self._encoded[key] = _Pages(entries)
        if most is None and offset in pages.replies:
            return pages.replies[offset]
        version = self._versions.get(name, 0)
        reply = EncodedReply(page(name, pages.encoded, offset, most, version, self.page_bytes))
        if most is None and len(pages.replies) < 4096:
            pages.replies[offset] = reply
        return reply

    def preload(self) -> None:
        for name in split_names(self.parameters().get(STARTUP_PARAMETER)):
            if self.fanout.state(directory_topic(name)) is not None:
                continue
            self.get(name).addCallbacks(
                lambda snap, n=name: self.log.info(
                    "Cached directory {name} ({count} entries)",
                    name=n,
                    count=len(snap.get("entries", ())),
                    event="directory.cached",
                ),
                lambda f, n=name: self.log.warn(
                    "Could not cache directory {name}: {error}",
                    name=n,
                    error=f.getErrorMessage(),
                    event="directory.cache_failed",
                ),
            )

    def _visible(self, session: Session, snapshot: dict[str, Any]) -> list[dict[str, Any]]:
        return visible_entries(self.scope(session), snapshot.get("entries", ()))

    # --- handlers ------------------------------------------------------------------
    def get_directory(self, session: Session, frame: Frame) -> Reply:
        body = frame.body or {}
        name = text(body, "name")
        offset = _whole_number(body, "offset", 0, 0) or 0
        most = _whole_number(body, "limit", None, 1)
        topic = directory_topic(name)
        if topic in self._watched and self.fanout.watching(topic, session):
            return self._page(name, self.scope(session), offset, most)  # a later page: no copy
        claim = self.watches.claim(session, [topic])

        def answer(_: object) -> EncodedReply:
            return self._page(name, self.scope(session), offset, most)

        d = self.get(name).addCallback(lambda _: self.watches.hold(session, topic))
        return claim.until(d).addCallback(answer)

    def search(self, session: Session, frame: Frame) -> Reply:
        body = frame.body or {}
        name, query, most = text(body, "name"), text(body, "query"), limit(body)
        needle = query.lower()

        def found(snapshot: dict[str, Any]) -> dict[str, Any]:
            hits = [e for e in self._visible(session, snapshot) if matches(e, needle)]
            return {"name": name, "query": query, "entries": hits[:most]}

        return self.get(name).addCallback(found)

    def transfer_targets(self, session: Session, frame: Frame) -> Reply:
        body = frame.body or {}
        query, most = text(body, "query"), limit(body)
        needle = query.lower()
        names = split_names(self.parameters().get(TRANSFER_PARAMETER)) or [COMPANY_DIRECTORY]

        def found(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
            hits: list[dict[str, Any]] = []
            for name, snapshot in zip(names, snapshots, strict=True):
                for entry in self._visible(session, snapshot):
                    if matches(entry, needle):
                        hits.append({**entry, "directory": name})
            return {"query": query, "entries": hits[:most]}

        d = defer.gatherResults([self.get(n) for n in names], consumeErrors=True)
        d.addErrback(lambda f: f.value.subFailure if isinstance(f.value, defer.FirstError) else f)
        return d.addCallback(found)
