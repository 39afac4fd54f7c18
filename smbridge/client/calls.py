"""The catalog's requests as methods of :class:`~smbridge.client.BridgeClient`.

:class:`ClientCalls` holds the calls that are plain requests on an open session
(GetVersion, WatchQueue with its pieces gathered, UnwatchQueue, GetDirectory with its
pages followed, GetResourceUri and a download of its URI); the session's life
(logon, resume, heartbeats, logoff) stays in :mod:`smbridge.client.session`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from smbridge.client.continued import gather
from smbridge.client.directory import read_directory
from smbridge.client.download import fetch
from smbridge.codec.catalog import (
    GET_DIRECTORY,
    GET_RESOURCE_URI,
    GET_VERSION,
    QUEUE_CHANGED,
    UNWATCH_QUEUE,
    WATCH_QUEUE,
    MessageType,
)


class _Client(Protocol):
    """What the calls need of the client they are mixed into."""

    ca: Path | None
    client_type: str
    _clock: IReactorTime

    def request(
        self, message: MessageType, body: dict[str, Any] | None = None
    ) -> Deferred[dict[str, Any]]: ...

    def add_listener(self, listener: Any) -> None: ...

    def remove_listener(self, listener: Any) -> None: ...

    @property
    def closed(self) -> Deferred[Exception]: ...

    def get_resource_uri(self, kind: str, path: str) -> Deferred[str]: ...


class ClientCalls:
    """The requests of the catalog that a session makes (a mixin of BridgeClient)."""

    def get_version(self: _Client) -> Deferred[dict[str, Any]]:
        return self.request(GET_VERSION, {})

    def watch_queue(self: _Client, name: str) -> Deferred[dict[str, Any]]:
        """WatchQueue; fires with the whole snapshot ``{queue, interactions}`` (its pieces
        gathered, client/continued.py); QueueChanged follows."""

        def whole(reply: dict[str, Any]) -> Deferred[dict[str, Any]]:
            return gather(self, reply, QUEUE_CHANGED, "queue", "interactions")

        return self.request(WATCH_QUEUE, {"queue": name}).addCallback(whole)

    def unwatch_queue(self: _Client, name: str) -> Deferred[dict[str, Any]]:
        return self.request(UNWATCH_QUEUE, {"queue": name})

    def get_directory(self: _Client, name: str) -> Deferred[dict[str, Any]]:
        """Every entry of a directory, its pages followed; ``{name, entries, total, version}``."""
        d: Deferred[dict[str, Any]] = read_directory(lambda b: self.request(GET_DIRECTORY, b), name)
        return d

    def get_directory_page(
        self: _Client, name: str, offset: int = 0, limit: int | None = None
    ) -> Deferred[dict[str, Any]]:
        """One GetDirectory page: ``{name, entries, offset, total, next, more, version}``."""
        body: dict[str, Any] = {"name": name, "offset": offset}
        if limit is not None:
            body["limit"] = limit
        return self.request(GET_DIRECTORY, body)

    # --- resources (Table 8) ---------------------------------------------------------
    def get_resource_uri(self: _Client, kind: str, path: str) -> Deferred[str]:
        """GetResourceUri; fires with the URI of ``path`` under ``kind`` (``httpsecure``...)."""
        d = self.request(GET_RESOURCE_URI, {"kind": kind, "path": path})
        return d.addCallback(lambda reply: str(reply["uri"]))

    def download(
        self: _Client, kind: str, path: str, *, timeout: float = 30, max_bytes: int = 16 << 20
    ) -> Deferred[tuple[str, bytes]]:
        """Ask the bridge for the URI of a resource and fetch it with treq.

        Fires with ``(uri, content)``; fails with ClientError ``download-failed`` (its
        body holds ``status`` and ``uri``). HTTPS is verified against the ``ca`` given
        to :func:`~smbridge.client.connect`, else the platform's trust store.
        """

        def fetched(uri: str) -> Deferred[tuple[str, bytes]]:
            d = fetch(
                self._clock,
                uri,
                ca=self.ca,
                client_type=self.client_type,
                timeout=timeout,
                max_bytes=max_bytes,
            )
            return d.addCallback(lambda content: (uri, content))

        return self.get_resource_uri(kind, path).addCallback(fetched)
