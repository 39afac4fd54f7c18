"""The logon floor for bench/reconnect.py: raw Twisted TLS plus one Notifier round trip.

``minimal_tls.py`` prices a handshake; a logon also costs the Notifier's answer. This
is the simplest program that does a logon's bytes on both hops, and nothing else:

- a Twisted TLS server with the bridge's certificate and settings (as ``minimal_tls``);
- one TLS link to the real Notifier with the bridge's client certificate, registered
  as a bridge;
- per connection: read one CreateSession frame, parse it, send ``Authenticate`` on the
  link; on the answer, send ``SessionClosed`` for the client's previous session (a
  client logging on again, as the benchmark's clients do) and ``SessionOpened`` for the
  new one, and write an answer frame the size of the bridge's CreateSession answer.

No throttle, sessions, timers, logging, admission, roster or fan-out. What the bridge
costs beyond this is the price of being a Session Manager; what this costs beyond
``minimal_tls`` is the price of the Notifier round trip in Twisted.

    python bench/minimal_logon.py PORT CERT NOTIFIER_PORT CA CLIENT_CERT
"""

from __future__ import annotations

import json
import secrets
import sys
from functools import partial
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smbridge import pki  # noqa: E402
from smbridge.codec import Kind, encode  # noqa: E402
from smbridge.codec.catalog import (  # noqa: E402
    LINK_AUTHENTICATE,
    LINK_REGISTER,
    LINK_SESSION_CLOSED,
    LINK_SESSION_OPENED,
)
from smbridge.codec.frames import HEADER  # noqa: E402

# The bridge's CreateSession answer is about 1,040 bytes of JSON (roster, resources,
# the user): the same size here, so both write the same bytes to the client.
ANSWER_BYTES = 1040


def frames(buf: bytes) -> tuple[list[tuple[int, int, int, int, bytes]], bytes]:
    """(kind, object type, event id, request id, payload) of each whole frame; the rest."""
    out = []
    while len(buf) >= 14 and len(buf) >= 4 + int.from_bytes(buf[:4], "big"):
        n = 4 + int.from_bytes(buf[:4], "big")
        _, _, kind, ot, ev, rid = HEADER.unpack_from(buf)
        out.append((kind, ot, ev, rid, buf[14:n]))
        buf = buf[n:]
    return out, buf


class Link(Protocol):
    """The one link to the Notifier: requests by id, notifications as they come."""

    buf = b""

    def __init__(self) -> None:
        self.next_id = 0
        self.waiting: dict[int, Any] = {}
        self.sessions: dict[str, str] = {}  # clientId -> its current session id

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]
        registration = {"name": "minimal", "fqdn": "localhost", "kind": "off-server",
                        "location": "", "ports": {}, "accept": "default",
                        "version": "0"}  # fmt: skip
        self.request(LINK_REGISTER, registration, lambda _: None)

    def request(self, key: tuple[int, int], body: dict[str, Any], then: Any) -> None:
        self.next_id += 1
        self.waiting[self.next_id] = then
        self.transport.write(encode(Kind.REQUEST, *key, self.next_id, body))  # type: ignore[union-attr]

    def notify(self, key: tuple[int, int], body: dict[str, Any]) -> None:
        self.transport.write(encode(Kind.NOTIFICATION, *key, 0, body))  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        got, self.buf = frames(self.buf + data)
        for kind, _, _, rid, payload in got:
            if kind in (Kind.RESPONSE, Kind.ERROR) and rid in self.waiting:
                self.waiting.pop(rid)(json.loads(payload) if kind == Kind.RESPONSE else None)


class Logon(Protocol):
    """One client: CreateSession in, Authenticate out, the answer back."""

    buf = b""
    link: Link

    def dataReceived(self, data: bytes) -> None:
        got, self.buf = frames(self.buf + data)
        for _, ot, ev, rid, payload in got:
            body = json.loads(payload)
            request = {"user": body["user"], "password": body["password"], "station": None}
            then = partial(self.answer, body=body, head=(ot, ev, rid))
            self.link.request(LINK_AUTHENTICATE, request, then)

    def answer(
        self, auth: dict[str, Any] | None, body: dict[str, Any], head: tuple[int, int, int]
    ) -> None:
        if auth is None:
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        session = secrets.token_urlsafe(16)
        old = self.link.sessions.get(body["clientId"])
        if old is not None:
            self.link.notify(LINK_SESSION_CLOSED, {"sessionId": old})
        self.link.sessions[body["clientId"]] = session
        self.link.notify(LINK_SESSION_OPENED, {"sessionId": session, "user": body["user"]})
        answer = {"sessionId": session, "resumeToken": secrets.token_urlsafe(32), "auth": auth}
        pad = ANSWER_BYTES - len(json.dumps(answer, separators=(",", ":"))) - 10
        self.transport.write(encode(Kind.RESPONSE, *head, {**answer, "pad": "p" * max(0, pad)}))  # type: ignore[union-attr]


def main() -> None:
    port, cert = int(sys.argv[1]), Path(sys.argv[2])
    notifier_port, ca, client_cert = int(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
    link = Link()
    link_options = pki.client_options("localhost", ca, client_cert)
    # Plain TLSMemoryBIOProtocol: wrapClientTLS would hold each write for a turn.
    link_factory = TLSMemoryBIOFactory(link_options, True, Factory.forProtocol(lambda: link))

    def connect() -> None:  # until the Notifier listens (both start at once)
        d = TCP4ClientEndpoint(reactor, "127.0.0.1", notifier_port).connect(link_factory)
        d.addErrback(lambda _: reactor.callLater(0.2, connect))

    connect()

    def logon() -> Logon:
        p = Logon()
        p.link = link
        return p

    options = pki.server_options(cert, session_tickets=True)
    factory = TLSMemoryBIOFactory(options, False, Factory.forProtocol(logon))
    TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(factory)
    reactor.run()


if __name__ == "__main__":
    main()
