"""The reference for bench/reconnect.py: raw Twisted TLS handshakes, nothing else.

A Twisted TLS server with the bridge's certificate and TLS settings (Mozilla
intermediate, TLS 1.3, ECDSA P-256, session tickets on:
``pki.server_options(..., session_tickets=True)``, Twisted's own
``TLSMemoryBIOFactory``) that accepts, handshakes, reads one frame and answers it
with one response frame (the size of the bridge's CreateSession answer). What
a reconnect costs it is the price of the handshake alone, full or resumed.

    python bench/minimal_tls.py PORT CERT
"""

from __future__ import annotations

import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smbridge import pki  # noqa: E402
from smbridge.codec import Kind, encode  # noqa: E402
from smbridge.codec.frames import HEADER  # noqa: E402

# As large as the bridge's CreateSession answer (about 1,040 bytes of JSON).
ANSWER = {"sessionId": "s" * 22, "resumeToken": "t" * 43, "pad": "p" * 950}


class Answer(Protocol):
    buf = b""

    def dataReceived(self, data: bytes) -> None:
        buf = self.buf + data
        if len(buf) >= 14 and len(buf) >= 4 + int.from_bytes(buf[:4], "big"):
            _, _, _, ot, ev, rid = HEADER.unpack_from(buf)
            self.transport.write(encode(Kind.RESPONSE, ot, ev, rid, ANSWER))  # type: ignore[union-attr]
            buf = b""
        self.buf = buf


def main() -> None:
    port, cert = int(sys.argv[1]), Path(sys.argv[2])
    options = pki.server_options(cert, session_tickets=True)
    factory = TLSMemoryBIOFactory(options, False, Factory.forProtocol(Answer))
    TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(factory)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
