"""The reference Notifier as one embeddable Twisted service.

``NotifierService`` wires the core (:class:`Notifier`), the traffic generator,
the link listener and the control API under one ``MultiService``. It takes
endpoints rather than ports so the caller decides on TLS, interfaces and port
0; the bridge's ``--demo`` embeds it and tests start it on port 0. Stopping it
closes the connections it accepted as well as its listening ports, so a stopped
Notifier really is gone (and tests leave a clean reactor).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import (
    Deferred,
    FirstError,
    gatherResults,
)
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from smbridge.listening import ListenerService, ListenFailed
from smbridge.notifier.control import control_site
from smbridge.notifier.link import NotifierLinkFactory
from smbridge.notifier.model import Notifier
from smbridge.notifier.pair import Pair
from smbridge.notifier.peer import PeerClient
from smbridge.notifier.resources import resource_site
from smbridge.notifier.site import Site
from smbridge.notifier.traffic import Traffic
from smbridge.notifier.trust import CertificateTrust


def _first_error(failure: Failure) -> Failure:
    """Unwrap gatherResults' FirstError so callers see the listener's own failure."""
    if isinstance(failure.value, FirstError):
        return failure.value.subFailure
    return failure


class NotifierService(MultiService):
    """A reference Notifier: link listener, optional control API, traffic generator."""

    log = Logger()
    # The twistd notifier option behind each listener, named when one cannot bind.
    listen_options: dict[str, str] = {
        "link": "--port",
        "control": "--control",
        "resources-http": "--http-port",
        "resources-https": "--https-port",
    }

    def __init__(
        self,
        site: Site,
        *,
        reactor: IReactorTime,
        link_endpoint: IStreamServerEndpoint,
        control_endpoint: IStreamServerEndpoint | None = None,
        http_endpoint: IStreamServerEndpoint | None = None,
        https_endpoint: IStreamServerEndpoint | None = None,
        resources: Path | None = None,
        role: str | None = None,
        peer: str | None = None,
        peer_control: str | None = None,
        detection: float = 5.0,
        probe_interval: float = 1.0,
        probe_timeout: float | None = None,
        trust: CertificateTrust | None = None,
        roster_store: Path | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.site = site
        self.notifier = Notifier(site, reactor)
        self.notifier.trust = trust
        self.notifier.share.path = roster_store  # read back at start (docs/roster.md)
        self._links = NotifierLinkFactory(self.notifier)
        self.notifier.pair.on_change(self._role_changed)
        if role is not None or peer is not None:
            self.join_pair(
                role or self.notifier.pair.role, peer, peer_control, detection, probe_timeout
            )
            self.notifier.pair.interval = probe_interval
        self.traffic = Traffic(self.notifier, reactor, site.traffic)
        self._link = ListenerService("link", link_endpoint, self._links)
        self._link.setServiceParent(self)  # type: ignore[no-untyped-call]
        self._control: ListenerService | None = None
        if control_endpoint is not None:
            self._control = ListenerService(
                "control", control_endpoint, control_site(self.notifier, self.traffic)
            )
            self._control.setServiceParent(self)  # type: ignore[no-untyped-call]
        # The CIC server's HTTP plugin host (8018/8019), for resource downloads.
        self._http = self._resource_listener("http", http_endpoint, resources)
        self._https = self._resource_listener("https", https_endpoint, resources)

    def _resource_listener(
        self, label: str, endpoint: IStreamServerEndpoint | None, directory: Path | None
    ) -> ListenerService | None:
        if endpoint is None:
            return None
        listener = ListenerService(f"resources-{label}", endpoint, resource_site(label, directory))
        listener.setServiceParent(self)  # type: ignore[no-untyped-call]
        return listener

    @property
    def link_port(self) -> IListeningPort | None:
        return self._link.port

    @property
    def control_port(self) -> IListeningPort | None:
        return self._control.port if self._control is not None else None

    @property
    def http_port(self) -> IListeningPort | None:
        return self._http.port if self._http is not None else None

    @property
    def https_port(self) -> IListeningPort | None:
        return self._https.port if self._https is not None else None

    def when_listening(self) -> Deferred[None]:
        """Fire once the link (and the control API and resource ports, if any) are listening."""
        optional = (self._control, self._http, self._https)
        listeners = [self._link] + [lst for lst in optional if lst is not None]
        d = gatherResults([lst.when_listening() for lst in listeners], consumeErrors=True)
        d.addErrback(_first_error)
        return d.addCallback(lambda _: None)

    def join_pair(
        self,
        role: str,
        peer: str | None,
        peer_control: str | None = None,
        detection: float = 5.0,
        probe_timeout: float | None = None,
    ) -> Pair:
        """Take ``role`` in a pair whose other side's link is ``peer`` (HOST:PORT).

        Tests call it once both Notifiers listen (their ports are ephemeral). Without
        ``peer_control`` the probe is a TCP connect, blind to a frozen peer (warned).
        """
        reactor: Any = self.notifier.clock
        client = PeerClient(reactor, peer, peer_control) if peer is not None else None
        old = self.notifier.pair
        old.stop()
        pair = Pair(
            reactor,
            role,
            peer,
            probe=client.probe if client is not None else None,
            tell_peer=client.tell_role if client is not None else None,
            detection=detection,
            interval=min(1.0, detection / 3),
            probe_timeout=probe_timeout,
        )
        if peer is not None and peer_control is None:
            self.log.warn(
                "No --peer-control: the peer {peer} is probed with a TCP connect, which "
                "does not see a frozen peer (give --peer-control)",
                peer=peer,
                event="notifier.pair.tcp_probe",
            )
        pair.on_change(self._role_changed)
        share = self.notifier.share
        share.exchange = client.exchange_roster if client and client.control_url else None
        pair.on_peer(lambda alive: share.peer_alive() if alive else share.peer_lost())
        self.notifier.pair = pair
        if self.running:
            pair.start()
            if role != old.role:
                self._role_changed(role)
        return pair

    def _role_changed(self, role: str) -> None:
        """Close the bridges' links: followers find the primary, pinned ones learn the role.

        A bridge pinned to this server registers again and reads the new role in
        the answer (on the backup it redirects; on the primary it accepts again).
        """
        self._links.drop_all()

    def startService(self) -> None:
        self.notifier.load_roster()
        self.notifier.share.start()
        try:
            super().startService()  # type: ignore[no-untyped-call]
        except ListenFailed as e:  # name the option that sets the port (the top service logs it)
            e.option = e.option or self.listen_options.get(e.name)
            raise
        self.traffic.start()
        self.notifier.pair.start()

    def stopService(self) -> Deferred[Any]:
        self.notifier.pair.stop()
        self.notifier.share.stop()
        self.traffic.stop()
        self.notifier.statistics.cancel()
        d: Deferred[Any] = super().stopService()  # type: ignore[no-untyped-call]
        return d
