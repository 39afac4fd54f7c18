"""Logons against the site's users: PBKDF2 checks with a cache of successes, and client
certificates the bridge verified (mapped to users by site_certs.py)."""

from __future__ import annotations

import hashlib
from typing import Any, NoReturn

from twisted.logger import Logger

from smbridge.errors import BadRequest, LogonFailed
from smbridge.notifier.passwords import hash_password, verify_password
from smbridge.notifier.site import Site
from smbridge.notifier.site_certs import CertificateIndex
from smbridge.notifier.site_types import User

_AUTH_CACHE_LIMIT = 100_000


class Authenticator:
    """Checks credentials and stations; answers the Authenticate payload."""

    log = Logger()

    def __init__(self, site: Site) -> None:
        self.site = site
        self._verified: set[tuple[bytes, str]] = set()
        self._dummy_hash: str | None = None
        self._index: CertificateIndex | None = None  # users by certificate, built at first use

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
        if u.require_certificate:  # checked after the password: no hint that the user exists
            self._refuse(user, "certificate-required", "this user must log on with a certificate")
        return self._answer(u, station)

    def authenticate_certificate(
        self, certificate: Any, station: str | None = None, user: str | None = None
    ) -> dict[str, Any]:
        """A logon by the client certificate the bridge verified: the user it maps to.

        ``certificate`` is ``{subject, fingerprint, ...}``; ``user``, when the client
        named one, must be the user the certificate maps to. Refused with reason
        ``certificate-unknown`` when no user (or another user) maps to it.
        """
        if not isinstance(certificate, dict):
            raise BadRequest("certificate must be an object")
        subject, fingerprint = certificate.get("subject"), certificate.get("fingerprint")
        if not isinstance(subject, str) or not isinstance(fingerprint, str):
            raise BadRequest("certificate needs subject and fingerprint strings")
        if self._index is None:
            self._index = CertificateIndex(
                (u.id, u.certificate) for u in self.site.users.values() if u.certificate
            )
        found = self._index.find(subject, fingerprint)
        if user is not None:
            found = [uid for uid in found if uid == user]
        if len(found) != 1:
            self._refuse(
                subject[:128],
                "certificate-unknown",
                "no user is registered for this certificate"
                if not found
                else "this certificate maps to several users: name one",
            )
        return self._answer(self.site.users[found[0]], station)

    def _refuse(self, user: str, reason: str, message: str) -> NoReturn:
        self.log.info(
            "Logon of {user} refused: {reason}",
            user=user,
            event="notifier.auth.refused",
            reason=reason,
        )
        raise LogonFailed(message, reason=reason)

    def _answer(self, u: User, station: str | None) -> dict[str, Any]:
        """The Authenticate answer for ``u`` (the station checked)."""
        user = u.id
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
