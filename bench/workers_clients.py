"""The load generators of bench/workers.py, each a process of its own, made cheap.

On a 2-core machine the load generators share the cores with the bridge, so every
CPU second they spend is one the bridge's workers cannot use. They stay honest (the
bridge does the same work for them as for any client) but skip Python layers:

- **logons** (:func:`run_logons`): one ``select.epoll`` loop over non-blocking
  sockets, the TLS handshake done by ``SSLSocket.do_handshake`` on the socket itself
  (OpenSSL reads and writes the descriptor; no asyncio, no memory BIOs). Every logon
  is a new TCP connection and a full TLS 1.3 handshake (no session is offered for
  resumption), then ``CreateSession`` and its answer, then the socket is closed.
- **watch** (:func:`run_watch`): plain blocking sockets log on and watch, in phases
  over all of them (every logon sent, every answer read, every watch sent, ...); then
  one ``select.epoll`` loop (level-triggered, up to 4,096 events a call) drains every
  socket with ``recv_into`` one preallocated buffer and counts bytes only, sleeping
  a few milliseconds between passes so that each read takes what a pass let pile up
  (the kernel buffers it; the bridge's writes never wait on it). A few
  sample sockets also count whole frames (the frame size, for a cross-check). The
  number of deliveries comes from the bridge's own ``smbridge_sent_frames_total``.
- **hold** (:func:`run_hold`): asyncio TLS sessions kept open (not timed).

Commands on stdin, one a line: ``mark`` prints the counts so far (JSON), ``stop``
prints them and exits. Each answer carries the process's own CPU seconds.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import select
import socket
import ssl
import sys
import time
from typing import Any

from smbridge.codec import Kind, encode
from smbridge.codec import catalog as c

RCVBUF = 1 << 20  # the watchers' receive buffers: room for a slow drain pass
DRAIN_BUFFER = 1 << 18
SAMPLE_SOCKETS = 5
DRAIN_PACE = 0.004  # seconds between drain passes: fewer, fuller reads (well inside RCVBUF)


def context() -> ssl.SSLContext:
    """TLS 1.3, nothing verified: no CA is loaded, so OpenSSL's chain check (which it runs
    even under ``CERT_NONE``) stops at the first certificate instead of checking the CA's
    signature on it. The handshake's own signature (CertificateVerify) is still checked."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # the clients' own CPU is not what is measured
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def logon_frame(i: int) -> bytes:
    body = {"user": f"agent{i % 50 + 1}", "password": "demo", "clientId": f"w{os.getpid()}-{i}"}
    return encode(Kind.REQUEST, *c.CREATE_SESSION, 1, body)


def _frames(pending: bytearray) -> list[bytes]:
    """Whole frames cut from the front of ``pending``."""
    out = []
    while len(pending) >= 4:
        end = 4 + int.from_bytes(pending[:4], "big")
        if len(pending) < end:
            break
        out.append(bytes(pending[:end]))
        del pending[:end]
    return out


def _status(counts: dict[str, Any]) -> str:
    return json.dumps({**counts, "cpu_s": round(time.process_time(), 3)})


# --- logons ------------------------------------------------------------------------------
class _Logon:
    """One connection's way through connect, handshake, CreateSession and its answer."""

    def __init__(self, ep: select.epoll, ctx: ssl.SSLContext, port: int, n: int) -> None:
        self.ep, self.ctx, self.n = ep, ctx, n
        self.raw = socket.socket()
        self.raw.setblocking(False)
        self.sock: ssl.SSLSocket | None = None
        self.pending = bytearray()
        self.sent = False
        code = self.raw.connect_ex(("127.0.0.1", port))
        if code not in (0, errno.EINPROGRESS):
            raise OSError(code, os.strerror(code))
        self.fd = self.raw.fileno()
        ep.register(self.fd, select.EPOLLOUT)

    def step(self) -> str | None:
        """Advance on readiness: None while under way, else "ok" or "errors"."""
        try:
            if self.sock is None:
                code = self.raw.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    return "errors"
                self.sock = self.ctx.wrap_socket(
                    self.raw, server_hostname="localhost", do_handshake_on_connect=False
                )
            return self._advance(self.sock)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as e:
            want = select.EPOLLIN if isinstance(e, ssl.SSLWantReadError) else select.EPOLLOUT
            self.ep.modify(self.fd, want)
            return None
        except (OSError, ssl.SSLError):
            return "errors"
        return None

    def _advance(self, sock: ssl.SSLSocket) -> str | None:
        if not self.sent:
            sock.do_handshake()
            sock.send(logon_frame(self.n))
            self.sent = True
            self.ep.modify(self.fd, select.EPOLLIN)
        while True:
            data = sock.recv(65536)
            if not data:
                return "errors"
            self.pending += data
            for frame in _frames(self.pending):
                if frame[5] != Kind.NOTIFICATION:
                    return "ok" if frame[5] == Kind.RESPONSE else "errors"

    def close(self) -> None:
        try:
            self.ep.unregister(self.fd)
        except OSError:
            pass
        (self.sock or self.raw).close()


def run_logons(port: int, concurrency: int, seconds: float) -> dict[str, Any]:
    """``concurrency`` logons under way at once for ``seconds``; counts ok and errors."""
    ctx, ep = context(), select.epoll()
    counts = {"ok": 0, "errors": 0}
    live: dict[int, _Logon] = {}
    n = 0

    def start() -> None:
        nonlocal n
        n += 1
        try:
            one = _Logon(ep, ctx, port, n)
        except OSError:
            counts["errors"] += 1
            return
        live[one.fd] = one

    end = time.monotonic() + seconds
    for _ in range(concurrency):
        start()
    while live:
        for fd, _ in ep.poll(0.5, 1024):
            one = live.get(fd)
            if one is None:
                continue
            outcome = one.step()
            if outcome is not None:
                counts[outcome] += 1
                one.close()
                del live[fd]
                if time.monotonic() < end:
                    start()
        if time.monotonic() >= end + 30:
            break
    ep.close()
    return counts


# --- watchers ----------------------------------------------------------------------------
def _answer(sock: socket.socket, pending: bytearray) -> bytes:
    """The next answer on a blocking socket (response or error), past any notification."""
    while True:
        for frame in _frames(pending):
            if frame[5] != Kind.NOTIFICATION:
                return frame
        data = sock.recv(65536)
        if not data:
            raise SystemExit("the bridge closed a watcher's connection")
        pending += data


def _watch_all(
    port: int, count: int, queues: list[str]
) -> tuple[list[socket.socket], list[bytearray]]:
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        s.connect(("127.0.0.1", port))
        socks.append(s)
    pendings = [bytearray() for _ in socks]
    # Phase by phase over all sockets: logons, then each queue's watch.
    phases = [[logon_frame(i) for i in range(count)]] + [
        [encode(Kind.REQUEST, *c.WATCH_QUEUE, rid, {"queue": q})] * count
        for rid, q in enumerate(queues, 2)
    ]
    for frames in phases:
        for s, frame in zip(socks, frames, strict=True):
            s.sendall(frame)
        for s, pending in zip(socks, pendings, strict=True):
            answer = _answer(s, pending)
            if answer[5] != Kind.RESPONSE:
                raise SystemExit(f"refused: {answer[14:200]!r}")
    return socks, pendings


def run_watch(port: int, count: int, queues: list[str]) -> None:
    """Log on and watch, print "ready", then drain every socket until "stop"."""
    socks, pendings = _watch_all(port, count, queues)
    ep = select.epoll(sizehint=count + 1)
    by_fd: dict[int, socket.socket] = {}
    for s in socks:
        s.setblocking(False)
        by_fd[s.fileno()] = s
        ep.register(s.fileno(), select.EPOLLIN)
    samples = {s.fileno(): p for s, p in zip(socks[:SAMPLE_SOCKETS], pendings, strict=False)}
    stdin = sys.stdin.fileno()
    ep.register(stdin, select.EPOLLIN)
    buf = bytearray(DRAIN_BUFFER)
    view = memoryview(buf)
    counts = {"bytes": 0, "sample_bytes": 0, "sample_frames": 0, "closed": 0}
    print("ready", flush=True)
    while True:
        for fd, _ in ep.poll(-1, 4096):
            if fd == stdin:
                for command in os.read(stdin, 4096).decode().split():
                    print(_status(counts), flush=True)
                    if command == "stop":
                        return
                continue
            try:
                got = by_fd[fd].recv_into(buf)
            except BlockingIOError:
                continue
            if not got:
                ep.unregister(fd)
                counts["closed"] += 1
                continue
            counts["bytes"] += got
            pending = samples.get(fd)
            if pending is not None:
                counts["sample_bytes"] += got
                pending += view[:got]
                counts["sample_frames"] += len(_frames(pending))
        time.sleep(DRAIN_PACE)


# --- held sessions -----------------------------------------------------------------------
async def _reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        head = await reader.readexactly(4)
        frame = head + await reader.readexactly(int.from_bytes(head, "big"))
        if frame[5] != Kind.NOTIFICATION:
            return frame


async def run_hold(port: int, count: int) -> dict[str, Any]:
    """Open ``count`` TLS sessions and keep them until a line arrives on stdin."""
    ctx, held, errors = context(), [], 0
    gate = asyncio.Semaphore(200)

    async def one(i: int) -> None:
        nonlocal errors
        async with gate:
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
                )
                writer.write(logon_frame(i))
                frame = await _reply(reader)
                if frame[5] != Kind.RESPONSE:
                    raise RuntimeError(frame[:120])
                held.append(writer)
            except Exception:
                errors += 1

    await asyncio.gather(*(one(i) for i in range(count)))
    print(json.dumps({"held": len(held), "errors": errors}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for writer in held:
        writer.transport.abort()
    return {"held": len(held), "errors": errors}
