"""One short TLS visit to a bridge port, for the session resumption (ticket) tests."""

from __future__ import annotations

import socket
import ssl

from smbridge.codec import Kind, encode
from smbridge.codec import catalog as c

GET_VERSION = encode(Kind.REQUEST, *c.GET_VERSION, 1, {})


def tls_visit(
    port: int,
    context: ssl.SSLContext,
    session: ssl.SSLSession | None,
    ws_path: str | None = None,
    request: bytes = GET_VERSION,
) -> tuple[bool, ssl.SSLSession | None]:
    """One connection to 127.0.0.1:``port``: handshake (offering ``session``), one
    exchange that reads the server's tickets, close; returns (resumed, the session to
    offer next time). With ``ws_path`` the exchange is a WebSocket upgrade to that path
    (answered 101), else ``request`` (a frame) and the start of its answer."""
    with socket.create_connection(("127.0.0.1", port), 5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
            tls.settimeout(5)
            if ws_path is not None:
                tls.sendall(
                    f"GET {ws_path} HTTP/1.1\r\nHost: localhost\r\n".encode()
                    + b"Upgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\nININ-Client-Type: test\r\n\r\n"
                )
                expected = b"\r\n\r\n"
            else:
                tls.sendall(request)
                expected = b""
            got = b""
            while len(got) < 14 or (expected and expected not in got):
                chunk = tls.recv(65536)
                assert chunk, got
                got += chunk
            if ws_path is not None:
                assert got.startswith(b"HTTP/1.1 101"), got[:80]
            return bool(tls.session_reused), tls.session
