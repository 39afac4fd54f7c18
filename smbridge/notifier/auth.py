"""Logons against the site's users: PBKDF2 checks with a cache of successes."""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.logger import Logger

from smbridge.errors import LogonFailed
from smbridge.notifier.passwords import hash_password, verify_password
from smbridge.notifier.site import Site

_AUTH_CACHE_LIMIT = 100_000


class Authenticator:
    """Checks credentials and stations; answers the Authenticate payload."""

    log = Logger()

    def __init__(self, site: Site) -> None:
        self.site = site
        self._verified: set[tuple[bytes, str]] = set()
        self._dummy_hash: str | None = None

    def authenticate(self, user: str, password: str, station: str | None = None) -> dict[str, Any]:
        """Check a logon; raise :class:`LogonFailed` with ``reason`` per the link contract."""
        u = self.site.users.get(user)
        if u is None:
            self._dummy_verify(password)
        if u is None or not self._verify(password, u.password_hash):
            self.log.info(
                "Logon of {user} refused: bad credentials",
                user=user,
                event="notifier.auth.refused",
                reason="bad-credentials",
            )
            raise LogonFailed("wrong user name or password", reason="bad-credentials")
        st = None
        if station:
            st = self.site.stations.get(station)
            if st is None:
                self.log.info(
                    "Logon of {user} refused: unknown station {station}",
                    user=user,
                    station=station,
                    event="notifier.auth.refused",
                    reason="unknown-station",
                )
                raise LogonFailed(f"unknown station {station!r}", reason="unknown-station")
        location = (st.location if st else None) or u.location or self.site.default_location
        self.log.debug("Logon of {user} accepted", user=user, event="notifier.auth.accepted")
        return {
            "user": {
                "id": u.id,
                "displayName": u.display_name,
                "extension": u.extension,
                "location": u.location or self.site.default_location,
                "workgroups": list(u.workgroups),
                "rights": list(u.rights),
            },
            "station": {"id": st.id, "location": st.location} if st else None,
            "location": location,
        }

    def _verify(self, password: str, stored: str) -> bool:
        # Cache successes only, keyed by a digest (never the password itself) and
        # the stored hash, so a changed password in the site invalidates the entry.
        # The user is not part of the key: the answer depends on the hash alone, so
        # generated sites that reuse one hash pay PBKDF2 once for all their users.
        key = (hashlib.sha256(password.encode("utf-8")).digest(), stored)
        if key in self._verified:
            return True
        if not verify_password(password, stored):
            return False
        if len(self._verified) >= _AUTH_CACHE_LIMIT:
            self._verified.clear()
        self._verified.add(key)
        return True

    def _dummy_verify(self, password: str) -> None:
        """Spend the time a real check takes, so unknown users are not told apart by timing."""
        if self._dummy_hash is None:
            some = next(iter(self.site.users.values()), None)
            iterations = int(some.password_hash.split("$")[1]) if some else 1000
            self._dummy_hash = hash_password("", iterations=iterations)
        verify_password(password, self._dummy_hash)
