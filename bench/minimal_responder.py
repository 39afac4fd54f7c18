"""The heartbeat reference: a bare responder, the best simple program for the same bytes.

Plain TCP; every request frame read is answered with the response the bridge gives
a Heartbeat (same message, same request id, the same body bytes, encoded once at
start), the answers of one read joined into one ``transport.write``. No sessions,
no timers, no accounting: what bench/heartbeat.py measures the bridge against.

    python bench/minimal_responder.py PORT
"""

from __future__ import annotations

import sys
from pathlib import Path
from struct import Struct

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smbridge.codec import Kind  # noqa: E402
from smbridge.codec.frames import HEADER, MIN_LENGTH, dump_json  # noqa: E402

_HEAD = Struct(">IBBHHI")
BODY = dump_json({"sessionUpdated": True, "haSwitchover": False})


class Responder(Protocol):
    buf = b""

    def dataReceived(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, end = 0, len(buf)
        out = []
        pack, unpack, size = HEADER.pack, _HEAD.unpack_from, MIN_LENGTH + len(BODY)
        while end - pos >= 14:
            length, version, _, ot, ev, rid = unpack(buf, pos)
            if pos + 4 + length > end:
                break
            out.append(pack(size, version, Kind.RESPONSE, ot, ev, rid))
            out.append(BODY)
            pos += 4 + length
        self.buf = buf[pos:]
        if out:
            self.transport.write(b"".join(out))  # type: ignore[union-attr]


def main() -> None:
    TCP4ServerEndpoint(reactor, int(sys.argv[1]), interface="127.0.0.1").listen(
        Factory.forProtocol(Responder)
    )
    print("listening", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
