"""The directory cache: directories served by the bridge without asking upstream.

A cached directory is a pinned fan-out topic (``directory:<name>``): loaded by
subscribing once, kept current by the same DirectoryChanged events that reach
watchers, and never released. Directories named in the server parameter
``DirectoriestoCacheOnSMStartup`` (pipe-separated) are loaded when the link comes
up; others on first request.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from smbridge.router.fanout import FanOut
from smbridge.topics import directory_topic

STARTUP_PARAMETER = "DirectoriestoCacheOnSMStartup"


def split_names(value: object) -> list[str]:
    """Split a pipe-separated server parameter into names."""
    if not isinstance(value, str):
        return []
    return [part.strip() for part in value.split("|") if part.strip()]


class DirectoryCache:
    log = Logger()

    def __init__(self, fanout: FanOut) -> None:
        self.fanout = fanout

    def get(self, name: str) -> defer.Deferred[dict[str, Any]]:
        """Fire with ``{name, entries}``, loading the directory on first use."""
        state = self.fanout.state(directory_topic(name))
        if state is not None:
            return defer.succeed(state.snapshot())
        return self.fanout.watch(directory_topic(name), None)

    def preload(self, parameters: dict[str, Any]) -> None:
        for name in split_names(parameters.get(STARTUP_PARAMETER)):
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
