"""The fan-out reference: a minimal Twisted server writing the same bytes.

It accepts plain TCP connections and, once ``--clients`` are connected, writes a
ring of pre-encoded QueueChanged frames (the same sizes the bridge relays) to
every connection, one ``transport.write`` per frame per client, as fast as its
reactor allows. No sessions, no routing: what a bridge's fan-out is measured against.
"""

from __future__ import annotations

import argparse
import sys

from twisted.internet import reactor, task
from twisted.internet.protocol import Factory, Protocol


class Sink(Protocol):
    def connectionMade(self) -> None:
        self.factory.clients.append(self)  # type: ignore[attr-defined]
        self.factory.maybe_start()  # type: ignore[attr-defined]

    def connectionLost(self, reason: object = None) -> None:
        self.factory.clients.remove(self)  # type: ignore[attr-defined]


class Fan(Factory):
    protocol = Sink

    def __init__(self, frames: list[bytes], clients: int, per_turn: int) -> None:
        self.frames = frames
        self.expected = clients
        self.per_turn = per_turn
        self.clients: list[Sink] = []
        self.loop: task.LoopingCall | None = None
        self.index = 0

    def maybe_start(self) -> None:
        if self.loop is None and len(self.clients) >= self.expected:
            self.loop = task.LoopingCall(self.burst)
            self.loop.start(0)

    def burst(self) -> None:
        frames, n = self.frames, len(self.frames)
        for _ in range(self.per_turn):
            raw = frames[self.index % n]
            self.index += 1
            for client in self.clients:
                client.transport.write(raw)  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--frames", required=True, help="file of length-prefixed frames")
    parser.add_argument("--per-turn", type=int, default=5)
    args = parser.parse_args()
    data = open(args.frames, "rb").read()
    frames, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        frames.append(data[pos : pos + 4 + length])
        pos += 4 + length
    reactor.listenTCP(
        args.port,
        Fan(frames, args.clients, args.per_turn),  # type: ignore[attr-defined]
        interface="127.0.0.1",
    )
    print("listening", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
