"""Reconnect storms: bridge CPU per reconnect, with and without TLS session resumption.

    python bench/reconnect.py            # full run (about a minute)
    python bench/reconnect.py --quick    # small and short, to check that it works

A reconnect is a TCP connection, a TLS handshake (full, or resumed with the ticket
the client kept), for wss the WebSocket upgrade, then one logon: ``CreateSession``
(a client logging on again; its clientId replaces its previous session) or
``ResumeSession`` (a client back within the linger time), answered, then a close.
Clients are blocking Python ``ssl`` sockets in a few threads (the client side is not
measured). Over the TLS listener and the wss port of one bridge, in the same run:

- ``logon`` / ``logon-resumed``: CreateSession after a full / a resumed handshake;
- ``resume`` / ``resume-resumed``: ResumeSession likewise.

Two references, in the same run:

- ``reference/handshake(-resumed)``: ``minimal_tls.py``, raw Twisted TLS with the same
  certificate and settings, full and resumed handshakes, then the same CreateSession
  frame read and a response frame of the bridge's answer's size written (no Notifier,
  no session);
- ``floor/logon``: ``minimal_logon.py``, the same plus one Notifier round trip
  (``Authenticate``, then ``SessionClosed``/``SessionOpened``) on a TLS link to the same
  Notifier: the least any program must do for a logon's bytes.
Per case: bridge (or reference) CPU seconds over the case, per reconnect, and
reconnects per CPU second; cases alternate over rounds and the median round is kept.
CPU comes from /proc (10 ms ticks), so the figures that matter are the ratios of cases
measured in the same run. Results: bench/results/reconnect.json (reconnect-quick.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import ssl
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    Server,
    bridge_args,
    free_port,
    notifier_args,
    wait_for_port,
    write_results,
)
from bench.tunnel import process_cpu  # noqa: E402
from smbridge import pki  # noqa: E402
from smbridge.codec import Frame, Kind, encode  # noqa: E402
from smbridge.codec import catalog as c  # noqa: E402
from smbridge.testing import decode_all  # noqa: E402

FULL = {"reconnects": 400, "threads": 4, "rounds": 3}
QUICK = {"reconnects": 40, "threads": 2, "rounds": 1}
BRIDGE_CASES = ("logon", "logon-resumed", "resume", "resume-resumed")
REFERENCE_CASES = ("handshake", "handshake-resumed")
FLOOR_CASES = ("logon",)
WS_PATH = "/extra/cic1/session"
UPGRADE = (
    f"GET {WS_PATH} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    "ININ-Client-Type: bench\r\n\r\n"
).encode()


def ws_wrap(frame: bytes) -> bytes:
    """One masked binary WebSocket frame (mask key 0: the payload is unchanged)."""
    n = len(frame)
    head = bytes((0x82, 0x80 | n)) if n < 126 else bytes((0x82, 0xFE)) + n.to_bytes(2, "big")
    return head + b"\0\0\0\0" + frame


def ws_unwrap(buf: bytes) -> tuple[bytes, bytes]:
    """(payloads of the whole server frames at the start of ``buf``, the rest)."""
    out, pos = b"", 0
    while len(buf) - pos >= 2:
        n, head = buf[pos + 1] & 0x7F, 2
        if n == 126:
            n, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
        elif n == 127:
            n, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
        if len(buf) - pos < head + n:
            break
        if buf[pos] & 0x0F in (0, 2):
            out += buf[pos + head : pos + head + n]
        pos += head + n
    return out, buf[pos:]


def frame_length(data: bytes) -> int:
    return 4 + int.from_bytes(data[:4], "big") if len(data) >= 4 else 1 << 30


class Visit:
    """One reconnect: connect, handshake (offering ``session``), upgrade, one exchange."""

    def __init__(self, port: int, context: ssl.SSLContext, ws: bool) -> None:
        self.port = port
        self.context = context
        self.ws = ws

    def run(self, session: ssl.SSLSession | None, request: bytes) -> tuple[bool, Any, bytes]:
        with socket.create_connection(("127.0.0.1", self.port), 10) as raw:
            with self.context.wrap_socket(raw, server_hostname="localhost", session=session) as s:
                s.settimeout(10)
                buf = b""
                if self.ws:
                    s.sendall(UPGRADE)
                    while b"\r\n\r\n" not in buf:
                        buf += self._recv(s)
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    if not head.startswith(b"HTTP/1.1 101"):
                        raise RuntimeError(f"upgrade refused: {head[:60]!r}")
                s.sendall(ws_wrap(request) if self.ws else request)
                data = b""
                while len(data) < frame_length(data):
                    buf += self._recv(s)
                    if self.ws:
                        payload, buf = ws_unwrap(buf)
                        data += payload
                    else:
                        data, buf = data + buf, b""
                return s.session_reused, s.session, data[: frame_length(data)]

    @staticmethod
    def _recv(s: ssl.SSLSocket) -> bytes:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        return chunk


def answer(data: bytes) -> Frame:
    frame = decode_all(data)[0]
    if frame.kind == Kind.ERROR:
        raise RuntimeError(f"error answer: {frame.body}")
    return frame


def client_loop(visit: Visit, case: str, count: int, index: int, out: dict[str, Any]) -> None:
    """``count`` reconnects of one kind by one client (thread ``index``)."""
    user = {"user": f"agent{index % 50 + 1}", "password": "demo", "clientId": f"storm-{index}"}
    logon = encode(Kind.REQUEST, *c.CREATE_SESSION, 1, user)
    if visit.port == out["reference_port"]:
        request = logon  # the same bytes in; minimal_tls.py answers one small frame
        _, session, _ = visit.run(None, request)
    else:
        _, session, data = visit.run(None, logon)  # the session and ticket to come back with
        body = answer(data).body or {}
        if case.startswith("resume"):
            token = {"sessionId": body["sessionId"], "resumeToken": body["resumeToken"]}
            request = encode(Kind.REQUEST, *c.RESUME_SESSION, 1, {**token, "received": 0})
        else:
            request = logon
    offered = session if case.endswith("-resumed") else None
    out["ready"].wait()
    reused = errors = 0
    for _ in range(count):
        try:
            was, _, data = visit.run(offered, request)
            reused += was
            answer(data)
        except Exception as e:  # counted, reported; the run goes on
            errors += 1
            out.setdefault("error_samples", []).append(repr(e)[:120])
    with out["lock"]:
        out["reused"] += reused
        out["errors"] += errors


def measure(
    target: str, port: int, ws: bool, case: str, pid: int, p: dict[str, Any], ref: int
) -> dict[str, Any]:
    """One case: every thread sets up first, then all reconnect while CPU is counted."""
    context = ssl.create_default_context(cafile=str(p["ca"]))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    visit = Visit(port, context, ws)
    per_thread = p["reconnects"] // p["threads"]
    out: dict[str, Any] = {
        "ready": threading.Event(),
        "lock": threading.Lock(),
        "reused": 0,
        "errors": 0,
        "reference_port": ref,
    }
    threads = [
        threading.Thread(target=client_loop, args=(visit, case, per_thread, i, out))
        for i in range(p["threads"])
    ]
    for t in threads:
        t.start()
    time.sleep(0.5)  # setups done (each is one reconnect); the bench is not a test
    cpu0, t0 = process_cpu(pid), time.monotonic()
    out["ready"].set()
    for t in threads:
        t.join(120)
    time.sleep(0.1)  # the server's side of the last closes
    cpu, wall = process_cpu(pid) - cpu0, time.monotonic() - t0
    n = per_thread * p["threads"]
    return {
        "target": target,
        "case": case,
        "reconnects": n,
        "resumed": out["reused"],
        "errors": out["errors"],
        "error_samples": out.get("error_samples", [])[:3],
        "seconds": round(wall, 2),
        "cpu": round(cpu, 2),
        "cpu_ms_per_reconnect": round(1000 * cpu / n, 3) if n else None,
        "reconnects_per_cpu_s": round(n / cpu) if cpu else None,
    }


def wait_registered(control: str, deadline: float = 30.0, bridges: int = 1) -> None:
    """Wait until ``bridges`` bridges (or logon floors) are registered and connected."""
    end, state = time.monotonic() + deadline, []
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"{control}/api/state", timeout=2) as r:
                state = json.load(r).get("bridges", [])
                if sum(bool(b.get("connected")) for b in state) >= bridges:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"not {bridges} bridge(s) registered with the Notifier: {state}")


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def main(args: argparse.Namespace) -> dict[str, Any]:
    p: dict[str, Any] = dict(QUICK if args.quick else FULL)
    work = Path(tempfile.mkdtemp(prefix="smbridge-bench-reconnect-"))
    files = pki.ensure_site_pki(work / "pki")
    p["ca"] = files.ca
    n_port, c_port = free_port(), free_port()
    tls_port, wss_port, ref_port = free_port(), free_port(), free_port()
    notifier = Server("notifier", notifier_args(n_port, c_port, files), work)
    bridge_cmd = bridge_args(
        n_port, tls_port, work, "--name", "bridge", "--wss-port", str(wss_port)
    )
    bridge = Server("bridge", bridge_cmd, work)
    ref = Server.script("minimal-tls", "minimal_tls.py", [str(ref_port), str(files.bridge)], work)
    floor_port = free_port()
    floor_args = [str(floor_port), str(files.bridge), str(n_port), str(files.ca)]
    floor = Server.script(
        "minimal-logon", "minimal_logon.py", [*floor_args, str(files.bridge_client)], work
    )
    plan = [("tls", tls_port, False, bridge.proc.pid, case) for case in BRIDGE_CASES]
    plan += [("wss", wss_port, True, bridge.proc.pid, case) for case in BRIDGE_CASES]
    plan += [("reference", ref_port, False, ref.proc.pid, case) for case in REFERENCE_CASES]
    plan += [("floor", floor_port, False, floor.proc.pid, case) for case in FLOOR_CASES]
    rounds: dict[str, list[dict[str, Any]]] = {f"{t}/{case}": [] for t, _, _, _, case in plan}
    try:
        for port in (c_port, tls_port, wss_port, ref_port, floor_port):
            wait_for_port(port)
        wait_registered(f"http://127.0.0.1:{c_port}", bridges=2)
        for _ in range(p["rounds"]):
            for target, port, ws, pid, case in plan:
                r = measure(target, port, ws, case, pid, p, ref_port)
                rounds[f"{target}/{case}"].append(r)
                print(
                    f"  {target:9} {case:15} {r['cpu_ms_per_reconnect']} ms CPU/reconnect "
                    f"{r['reconnects_per_cpu_s']}/CPU-s resumed {r['resumed']}/"
                    f"{r['reconnects']} errors {r['errors']}",
                    flush=True,
                )
    finally:
        floor.stop()
        ref.stop()
        bridge.stop()
        notifier.stop()
    summary = {}
    for key, rs in rounds.items():
        best = sorted(rs, key=lambda r: r["cpu_ms_per_reconnect"] or 0)[len(rs) // 2]
        summary[key] = {**best, "errors": sum(r["errors"] for r in rs)}

    def per_cpu(key: str) -> float | None:
        return summary[key]["reconnects_per_cpu_s"]  # type: ignore[no-any-return]

    ratios = {}
    for t in ("tls", "wss"):
        ratios[f"{t}_logon_resumption_gain"] = ratio(
            per_cpu(f"{t}/logon-resumed"), per_cpu(f"{t}/logon")
        )
        ratios[f"{t}_resume_resumption_gain"] = ratio(
            per_cpu(f"{t}/resume-resumed"), per_cpu(f"{t}/resume")
        )
    ratios["wss_vs_tls_logon"] = ratio(per_cpu("wss/logon"), per_cpu("tls/logon"))
    ratios["wss_vs_tls_logon_resumed"] = ratio(
        per_cpu("wss/logon-resumed"), per_cpu("tls/logon-resumed")
    )
    ratios["wss_resumed_vs_tls_full_logon"] = ratio(
        per_cpu("wss/logon-resumed"), per_cpu("tls/logon")
    )
    ratios["wss_vs_tls_resume_resumed"] = ratio(
        per_cpu("wss/resume-resumed"), per_cpu("tls/resume-resumed")
    )
    ratios["reference_resumption_gain"] = ratio(
        per_cpu("reference/handshake-resumed"), per_cpu("reference/handshake")
    )
    ratios["tls_logon_vs_raw_handshake"] = ratio(
        per_cpu("tls/logon"), per_cpu("reference/handshake")
    )
    # The floor: what a logon's Notifier round trip costs any Twisted program.
    ratios["logon_floor_vs_raw_handshake"] = ratio(
        per_cpu("floor/logon"), per_cpu("reference/handshake")
    )
    ratios["tls_logon_vs_logon_floor"] = ratio(per_cpu("tls/logon"), per_cpu("floor/logon"))
    results = {
        "params": {k: v for k, v in p.items() if k != "ca"},
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "started": time.time(),
        "rounds": rounds,
        "summary": summary,
        "ratios": ratios,
    }
    path = write_results("reconnect-quick" if args.quick else "reconnect", results)
    for key, row in summary.items():
        print(
            f"{key:28} {row['cpu_ms_per_reconnect']} ms CPU per reconnect, "
            f"{row['reconnects_per_cpu_s']} per CPU-s, resumed {row['resumed']}/{row['reconnects']}"
        )
    print(json.dumps(ratios))
    print(f"results: {path}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small, short run")
    main(parser.parse_args())
