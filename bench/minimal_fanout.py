"""The fan-out reference: the best simple Twisted server relaying the same bytes.

It takes the same stream the bridge takes: it registers on the Notifier's link
(TLS, the bridge's client certificate) as a bridge would and, once ``--clients``
plain TCP clients are connected, subscribes to ``--topic``; when they are all gone
it unsubscribes. Every upstream read is split into frames; the topic's events are
rewritten as the bridge writes them (request id 0, the same payload bytes), all the
events of the reactor turn are joined (one socket read is several TLS records, so
several ``dataReceived``; the bridge's runs span the turn too), and each client gets
ONE ``transport.write`` of them: coalesced, no sessions, no routing, no bounds, no
accounting. What a bridge's fan-out is measured against (bench/fanout.py).

    python bench/minimal_fanout.py --port P --notifier-port N --pki DIR --clients 1000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from struct import Struct

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smbridge import pki  # noqa: E402
from smbridge.codec import Kind, encode  # noqa: E402
from smbridge.codec.catalog import LINK_REGISTER, LINK_SUBSCRIBE, LINK_UNSUBSCRIBE  # noqa: E402

_HEAD = Struct(">IBB")  # length, version, kind
_NOTIFICATION = int(Kind.NOTIFICATION)
SUB = 1
ZERO_RID = b"\0\0\0\0"


class Sink(Protocol):
    def __init__(self, fan: Fan) -> None:
        self.fan = fan

    def connectionMade(self) -> None:
        self.fan.joined(self)

    def connectionLost(self, reason: object = None) -> None:
        self.fan.left(self)


class Upstream(Protocol):
    def __init__(self, fan: Fan) -> None:
        self.fan = fan
        self.buf = b""
        self.rid = 1

    def connectionMade(self) -> None:
        self.fan.upstream = self
        register = {
            "name": "minimal-fanout",
            "fqdn": "localhost",
            "kind": "off-server",
            "location": "",
            "ports": {},
            "accept": "default",
        }
        self.request(LINK_REGISTER, register)
        self.fan.maybe_subscribe()

    def request(self, message: tuple[int, int], body: dict[str, object]) -> None:
        self.rid += 1
        self.transport.write(encode(Kind.REQUEST, *message, self.rid, body))  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, end = 0, len(buf)
        unpack = _HEAD.unpack_from
        out = []
        while end - pos >= 14:
            length, _, kind = unpack(buf, pos)
            stop = pos + 4 + length
            if stop > end:
                break
            if kind == _NOTIFICATION:
                out.append(buf[pos : pos + 10])
                out.append(ZERO_RID)
                out.append(buf[pos + 14 : stop])
            pos = stop
        self.buf = buf[pos:]
        if out and self.fan.subscribed:
            self.fan.queue(out)


class Fan:
    def __init__(self, topic: str, expected: int) -> None:
        self.topic = topic
        self.expected = expected
        self.clients: list[Sink] = []
        self.upstream: Upstream | None = None
        self.subscribed = False
        self.pending: list[bytes] = []

    def queue(self, frames: list[bytes]) -> None:
        """Keep this read's events for the turn's one write to every client."""
        if not self.pending:
            reactor.callLater(0, self.flush)  # type: ignore[attr-defined]
        self.pending.extend(frames)

    def flush(self) -> None:
        raw, self.pending = b"".join(self.pending), []
        for client in self.clients:
            client.transport.write(raw)  # type: ignore[union-attr]

    def joined(self, client: Sink) -> None:
        self.clients.append(client)
        self.maybe_subscribe()

    def left(self, client: Sink) -> None:
        self.clients.remove(client)
        if not self.clients and self.subscribed and self.upstream is not None:
            self.subscribed = False
            self.upstream.request(LINK_UNSUBSCRIBE, {"sub": SUB})

    def maybe_subscribe(self) -> None:
        ready = len(self.clients) >= self.expected
        if ready and not self.subscribed and self.upstream is not None:
            self.subscribed = True
            self.upstream.request(LINK_SUBSCRIBE, {"topic": self.topic, "sub": SUB})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--notifier-port", type=int, required=True)
    parser.add_argument("--pki", required=True, help="the site's PKI directory")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--topic", default="queue:Sales")
    args = parser.parse_args()
    files = pki.SitePKI.in_dir(Path(args.pki))
    fan = Fan(args.topic, args.clients)
    TCP4ServerEndpoint(reactor, args.port, interface="127.0.0.1").listen(
        Factory.forProtocol(lambda: Sink(fan))
    )
    upstream = wrapClientTLS(
        pki.client_options("localhost", files.ca, files.bridge_client),
        TCP4ClientEndpoint(reactor, "127.0.0.1", args.notifier_port),
    )
    upstream.connect(Factory.forProtocol(lambda: Upstream(fan)))
    print("listening", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
