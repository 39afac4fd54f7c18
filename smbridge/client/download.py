"""Resource downloads (status icons, response files) with treq, from Table 8 URIs.

The URIs come from the bridge (GetResourceUri): through the reverse proxy for
tunnel sessions, straight to the CIC server's 8018/8019 otherwise. Requests carry
``ININ-Client-Type`` like every request of an internet client (the proxy checks it).
Connections are not kept: a client downloads now and then, and an idle pool would
hold sockets (and leave timers behind in tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from smbridge import pki
from smbridge.client.protocol import ClientError


class _TooLarge(Exception):
    pass


def fetch(
    reactor: Any,
    uri: str,
    *,
    ca: Path | None = None,
    client_type: str = "smbridge-client",
    timeout: float = 30,
    max_bytes: int = 16 << 20,
) -> Deferred[bytes]:
    """GET ``uri``; fires with the body of a 200 answer, else fails with ``download-failed``.

    HTTPS is verified against ``ca`` (PEM) when given, else the platform's trust store.
    A body larger than ``max_bytes`` fails too.
    """
    return Deferred.fromCoroutine(_fetch(reactor, uri, ca, client_type, timeout, max_bytes))


async def _fetch(
    reactor: Any, uri: str, ca: Path | None, client_type: str, timeout: float, max_bytes: int
) -> bytes:
    policy = (
        BrowserLikePolicyForHTTPS(trustRoot=pki.load_ca(ca))
        if ca is not None
        else BrowserLikePolicyForHTTPS()
    )
    pool = HTTPConnectionPool(reactor, persistent=False)
    client = HTTPClient(Agent(reactor, contextFactory=policy, pool=pool, connectTimeout=timeout))

    def failed(message: str, **extra: Any) -> ClientError:
        return ClientError(
            "download-failed",
            f"{uri}: {message}",
            {"code": "download-failed", "message": message, "uri": uri, **extra},
        )

    headers: dict[bytes | str, list[bytes | str]] = {b"ININ-Client-Type": [client_type]}
    try:
        response = await client.get(uri, headers=headers, timeout=timeout)
    except Exception as e:
        raise failed(str(e) or type(e).__name__) from e
    chunks: list[bytes] = []
    size = 0

    def collect(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if size > max_bytes:
            raise _TooLarge()
        chunks.append(data)

    try:
        await treq.collect(response, collect)
    except _TooLarge:
        raise failed(f"larger than {max_bytes} bytes", status=response.code) from None
    except Exception as e:
        raise failed(str(e) or type(e).__name__) from e
    if response.code != 200:
        raise failed(f"HTTP {response.code}", status=response.code)
    return b"".join(chunks)
