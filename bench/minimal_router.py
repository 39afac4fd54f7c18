"""The reference for bench/sizing.py: a minimal Twisted fan-out server, no session logic.

It registers on the Notifier's link like a bridge, subscribes once to every topic
named in a watch plan, and writes each event's bytes to the connections the plan
says watch that topic: the events of one upstream read for a client joined into one
``transport.write`` (issue 16: the strong reference), no sessions, timers,
visibility or limits. Clients are matched to the plan by the
``user`` of their first frame; every request gets an empty response so that the
same client script runs against it as against the bridge.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from struct import Struct

from twisted.internet import reactor
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smbridge import pki  # noqa: E402
from smbridge.codec import Kind, encode  # noqa: E402
from smbridge.codec.catalog import LINK_REGISTER, LINK_SUBSCRIBE  # noqa: E402

_HDR = Struct(">IBBHHI")


class Client(Protocol):
    def __init__(self, fan: Fan) -> None:
        self.fan = fan
        self.buf = b""
        self.user: str | None = None

    def dataReceived(self, data: bytes) -> None:
        buf = self.buf + data
        pos = 0
        while len(buf) - pos >= 14:
            length, _, _, ot, ev, rid = _HDR.unpack_from(buf, pos)
            if len(buf) - pos < 4 + length:
                break
            if self.user is None:
                self.user = json.loads(buf[pos + 14 : pos + 4 + length])["user"]
                self.fan.attach(self)
            self.transport.write(encode(Kind.RESPONSE, ot, ev, rid, {}))  # type: ignore[union-attr]
            pos += 4 + length
        self.buf = buf[pos:]

    def connectionLost(self, reason: object = None) -> None:
        self.fan.detach(self)


class Upstream(Protocol):
    def __init__(self, fan: Fan) -> None:
        self.fan = fan
        self.buf = b""

    def connectionMade(self) -> None:
        self.transport.write(
            encode(
                Kind.REQUEST,
                *LINK_REGISTER,
                1,
                {  # type: ignore[union-attr]
                    "name": "minimal",
                    "fqdn": "localhost",
                    "kind": "off-server",
                    "location": "",
                    "ports": {},
                    "accept": "default",
                },
            )
        )
        for sub, topic in self.fan.topics.items():
            self.transport.write(
                encode(
                    Kind.REQUEST,
                    *LINK_SUBSCRIBE,
                    1000 + sub,  # type: ignore[union-attr]
                    {"topic": topic, "sub": sub},
                )
            )

    def dataReceived(self, data: bytes) -> None:
        buf = self.buf + data
        pos = 0
        out: dict[Client, list[bytes]] = {}  # this read's events per client, in order
        while len(buf) - pos >= 14:
            length, _, kind, _, _, rid = _HDR.unpack_from(buf, pos)
            end = pos + 4 + length
            if end > len(buf):
                break
            if kind == Kind.NOTIFICATION:
                watchers = self.fan.watchers.get(rid)
                if watchers:
                    raw = buf[pos : pos + 10] + b"\0\0\0\0" + buf[pos + 14 : end]
                    for client in watchers:
                        queued = out.get(client)
                        if queued is None:
                            out[client] = [raw]
                        else:
                            queued.append(raw)
            pos = end
        self.buf = buf[pos:]
        for client, frames in out.items():
            client.transport.write(b"".join(frames))  # type: ignore[union-attr]


class Fan:
    def __init__(self, plan: dict[str, list[str]]) -> None:
        self.plan = plan
        names = sorted({t for topics in plan.values() for t in topics})
        self.topics = {i + 1: t for i, t in enumerate(names)}
        self.sub_of = {t: s for s, t in self.topics.items()}
        self.watchers: dict[int, list[Client]] = {s: [] for s in self.topics}

    def attach(self, client: Client) -> None:
        for topic in self.plan.get(client.user or "", ()):
            self.watchers[self.sub_of[topic]].append(client)

    def detach(self, client: Client) -> None:
        for topic in self.plan.get(client.user or "", ()):
            watchers = self.watchers[self.sub_of[topic]]
            if client in watchers:
                watchers.remove(client)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--notifier-port", type=int, required=True)
    parser.add_argument("--pki", required=True)
    parser.add_argument("--plan", required=True, help="JSON: user -> topics")
    args = parser.parse_args()
    files = pki.SitePKI.in_dir(Path(args.pki))
    fan = Fan(json.loads(Path(args.plan).read_text()))
    client_factory = Factory.forProtocol(lambda: Client(fan))
    SSL4ServerEndpoint(
        reactor, args.port, pki.server_options(files.bridge), interface="127.0.0.1"
    ).listen(client_factory)
    upstream = wrapClientTLS(
        pki.client_options("localhost", files.ca, files.bridge_client),
        TCP4ClientEndpoint(reactor, "127.0.0.1", args.notifier_port),
    )
    upstream.connect(Factory.forProtocol(lambda: Upstream(fan)))
    print("listening", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
