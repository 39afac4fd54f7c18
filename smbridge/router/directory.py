"""The directory cache and the directory requests served from it.

A cached directory is a pinned fan-out topic (``directory:<name>``): loaded by
subscribing once, kept current by the same DirectoryChanged events that reach
watchers, and never released. Directories named in ``DirectoriestoCacheOnSMStartup``
(pipe-separated) are loaded when the link comes up or the parameter changes; the
others on first request. GetDirectory also makes the session a watcher of the
directory, so it receives DirectoryChanged. Every answer and event is filtered to
what the user may see (visibility.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from smbridge.codec import Frame
from smbridge.codec.frames import dump_json
from smbridge.router.fanout import FanOut
from smbridge.router.fields import limit, text
from smbridge.router.reply import EncodedReply, Reply
from smbridge.router.visibility import Scope, visible_entries
from smbridge.router.watches import Watches
from smbridge.session.session import Session
from smbridge.topics import directory_topic

STARTUP_PARAMETER = "DirectoriestoCacheOnSMStartup"
TRANSFER_PARAMETER = "TransferDialogDirectories"
COMPANY_DIRECTORY = "Company Directory"
SEARCH_FIELDS = ("displayName", "id", "extension")


def split_names(value: object) -> list[str]:
    """Split a pipe-separated server parameter into names."""
    if not isinstance(value, str):
        return []
    return [part.strip() for part in value.split("|") if part.strip()]


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
        # GetDirectory answers, encoded once per (directory, scope) until the next change:
        # thousands of clients load the same Company Directory.
        self._encoded: dict[tuple[str, Scope], EncodedReply] = {}
        self._watched: set[str] = set()

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
        for key in [k for k in self._encoded if k[0] == name]:
            del self._encoded[key]

    def _encoded_answer(self, name: str, scope: Scope, snapshot: dict[str, Any]) -> EncodedReply:
        key = (name, scope)
        reply = self._encoded.get(key)
        if reply is None:
            entries = visible_entries(scope, snapshot.get("entries", ()))
            reply = self._encoded[key] = EncodedReply(dump_json({"name": name, "entries": entries}))
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
        name = text(frame.body or {}, "name")
        topic = directory_topic(name)
        claim = self.watches.claim(session, [topic])

        def answer(snapshot: dict[str, Any]) -> EncodedReply:
            return self._encoded_answer(name, self.scope(session), snapshot)

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
