"""What a client connection asks of the transport under it, whatever its layers.

``transport_backlog`` counts the bytes a transport holds that the kernel has not
taken (docs/sender.md); ``tcp_layer`` finds the TCP transport under TLS or the
tunnel, on which ``enable_keepalive`` turns TCP keepalive on (docs/lifecycle.md) and
``held.set_write_buffer`` sets the write buffer. Each looks through at most three
layers.
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


def tcp_layer(transport: object) -> object | None:
    """The TCP transport under ``transport`` (TLS or the tunnel over it): the layer
    whose ``getHandle()`` is the socket itself. None if there is none within three.

    A TLS layer (Twisted's ``TLSMemoryBIOProtocol``) forwards unknown attributes to
    the transport below it, so reading ``bufferSize`` or calling ``setTcpKeepAlive``
    on it seems to work, but its ``getHandle()`` is the OpenSSL connection and an
    attribute set on it stays on the wrapper: what concerns the socket is done on
    this layer.
    """
    import socket

    layer: object = transport
    for _ in range(3):
        if layer is None:
            return None
        get_handle = getattr(type(layer), "getHandle", None)  # the layer's own, not forwarded
        if get_handle is not None and isinstance(get_handle(layer), socket.socket):
            return layer
        layer = getattr(layer, "transport", None)
    return None


def enable_keepalive(transport: object) -> bool:
    """Turn on TCP keepalive on the TCP transport under ``transport`` (TLS or not).

    A peer that vanished without a FIN/RST (cable pulled, NAT state lost) is then
    detected within about two minutes of silence and its session starts lingering.
    Returns whether a TCP layer was found (at most three layers are searched).
    """
    import socket

    tcp = tcp_layer(transport)
    set_keepalive = getattr(tcp, "setTcpKeepAlive", None)
    if tcp is None or not callable(set_keepalive):
        return False
    handle = tcp.getHandle()  # type: ignore[attr-defined]
    try:
        set_keepalive(1)
    except OSError:  # not a TCP socket after all
        return False
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
    ):
        option = getattr(socket, name, None)
        if option is not None:
            try:
                handle.setsockopt(socket.IPPROTO_TCP, option, value)
            except OSError:
                pass
    return True
