"""Drain many client sockets at once, as cheaply as Python can, counting one marker.

The fan-out benchmark's clients receive the same stream of events: what matters is
when every one of them has all ``expected`` events, and that the load generator takes
as little of the machine as possible from the server it measures. So one thread
reads every socket with ``epoll`` and ``recv_into`` one buffer, and counts the events
by a marker that only they carry (``bytes.count`` over the buffer: no copy, no frame
parsing); a marker cut by a read boundary is found from the end of the last read.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Any

BUFFER = 1 << 20


def drain(socks: list[socket.socket], marker: bytes, expected: int, deadline_s: float) -> Any:
    """Read all ``socks`` until each has ``expected`` markers, or the deadline.

    Returns when the last socket had its last marker (``monotonic``), the bytes and
    markers each got, and how many finished. The sockets stay open (non-blocking).
    """
    poller = select.epoll()
    index = {}
    for i, sock in enumerate(socks):
        sock.setblocking(False)
        index[sock.fileno()] = i
        poller.register(sock.fileno(), select.EPOLLIN)
    n = len(socks)
    got = [0] * n
    seen = [0] * n
    tails = [b""] * n
    buf = bytearray(BUFFER)
    keep = len(marker) - 1
    waiting = n
    finished_at = None
    end = time.monotonic() + deadline_s
    try:
        while waiting and time.monotonic() < end:
            for fd, _ in poller.poll(0.05, 1024):
                i = index[fd]
                try:
                    size = socks[i].recv_into(buf)
                except BlockingIOError:
                    continue
                except OSError:
                    size = 0
                if size == 0:  # closed by the server: it counts as finished, short
                    poller.unregister(fd)
                    if seen[i] < expected:
                        waiting -= 1
                    continue
                got[i] += size
                if seen[i] >= expected:
                    continue
                found = buf.count(marker, 0, size)
                if keep and tails[i]:
                    found += (tails[i] + bytes(buf[: min(keep, size)])).count(marker)
                tails[i] = bytes(buf[max(0, size - keep) : size]) if keep else b""
                seen[i] += found
                if seen[i] >= expected:
                    waiting -= 1
                    if not waiting:
                        finished_at = time.monotonic()
    finally:
        poller.close()
    return {
        "finished_at": finished_at,
        "bytes": got,
        "events": seen,
        "complete": sum(1 for x in seen if x >= expected),
    }
