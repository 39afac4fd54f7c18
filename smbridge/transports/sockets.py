"""What a client connection asks of the transport under it, whatever its layers.

``transport_backlog`` counts the bytes a transport holds that the kernel has not
taken (docs/sender.md); ``enable_keepalive`` turns TCP keepalive on under TLS or
the tunnel (docs/lifecycle.md). Each looks through at most three layers.
"""

from __future__ import annotations


def transport_backlog(transport: object) -> int:
    """Bytes a transport holds that the kernel has not taken yet.

    Reads Twisted's ``FileDescriptor`` buffers (and, under TLS, the TLS layer's
    pending application data and the TCP transport below it). Bounded: at most
    three layers.
    """
    total = 0
    layer: object = transport
    for _ in range(3):
        if layer is None:
            break
        buffer = getattr(layer, "dataBuffer", None)
        if isinstance(buffer, bytes | bytearray | memoryview):
            total += len(buffer) - int(getattr(layer, "offset", 0))
            total += int(getattr(layer, "_tempDataLen", 0))
        pending = getattr(layer, "_appSendBuffer", None)
        if isinstance(pending, list):
            total += sum(len(b) for b in pending)
        layer = getattr(layer, "transport", None)
    return total


KEEPALIVE_IDLE = 60  # seconds of silence before the kernel's first keepalive probe
KEEPALIVE_INTERVAL = 10  # seconds between probes
KEEPALIVE_COUNT = 6  # unanswered probes before the kernel drops the connection


def enable_keepalive(transport: object) -> bool:
    """Turn on TCP keepalive on the TCP transport under ``transport`` (TLS or not).

    A peer that vanished without a FIN/RST (cable pulled, NAT state lost) is then
    detected within about two minutes of silence and its session starts lingering.
    Returns whether a TCP layer was found (at most three layers are searched).
    """
    import socket

    layer: object = transport
    for _ in range(3):
        if layer is None:
            return False
        set_keepalive = getattr(layer, "setTcpKeepAlive", None)
        if callable(set_keepalive):
            set_keepalive(1)
            handle = getattr(layer, "getHandle", lambda: None)()
            options = (
                ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
                ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                ("TCP_KEEPCNT", KEEPALIVE_COUNT),
            )
            for name, value in options:
                option = getattr(socket, name, None)
                if option is not None and isinstance(handle, socket.socket):
                    try:
                        handle.setsockopt(socket.IPPROTO_TCP, option, value)
                    except OSError:
                        pass
            return True
        layer = getattr(layer, "transport", None)
    return False
