"""The client's roster cache: one JSON file per site, replaced atomically after each logon.

``RosterCache(directory).save(site, reply)`` keeps ``roster``, ``selectionRule``
and ``location`` of a successful CreateSession reply; ``load(site)`` gives them
back, or ``None`` when there is none. A corrupt or unreadable file is ignored with
a warning (``client.roster_cache.corrupt``) and replaced by the next save; it never
raises. ``site`` is what identifies the site to the user: the typed host.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from twisted.logger import Logger

KEPT = ("roster", "selectionRule", "location")


class RosterCache:
    log = Logger()

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, site: str) -> Path:
        """The file of one site: a readable stem plus a digest, so any name is safe."""
        key = site.strip().lower()
        stem = re.sub(r"[^a-z0-9.-]+", "_", key)[:60]
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return self.directory / f"roster-{stem}-{digest}.json"

    def load(self, site: str) -> dict[str, Any] | None:
        path = self.path(site)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            self._corrupt(path, str(e))
            return None
        if not isinstance(data, dict) or not isinstance(data.get("roster"), list):
            self._corrupt(path, "not a roster")
            return None
        return {k: data.get(k) for k in KEPT}

    def save(self, site: str, reply: dict[str, Any]) -> Path:
        """Write the reply's roster for ``site``, replacing the old file atomically."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(site)
        body = json.dumps({k: reply.get(k) for k in KEPT}, indent=1).encode()
        fd, tmp = tempfile.mkstemp(prefix=".roster-", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def _corrupt(self, path: Path, why: str) -> None:
        self.log.warn(
            "Ignoring the roster cache {path}: {why}; it is rebuilt at the next logon",
            path=str(path),
            why=why,
            event="client.roster_cache.corrupt",
        )
