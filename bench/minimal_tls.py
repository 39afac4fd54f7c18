"""The reference for bench/reconnect.py: raw Twisted TLS handshakes, nothing else.

A Twisted TLS server with the bridge's certificate and TLS settings (Mozilla
intermediate, session tickets on: ``pki.server_options(..., session_tickets=True)``,
Twisted's own ``TLSMemoryBIOFactory``) that echoes what it reads. What a reconnect
costs it is the price of the handshake alone, full or resumed.

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


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


def main() -> None:
    port, cert = int(sys.argv[1]), Path(sys.argv[2])
    options = pki.server_options(cert, session_tickets=True)
    factory = TLSMemoryBIOFactory(options, False, Factory.forProtocol(Echo))
    TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(factory)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
