"""The CIC server's HTTP plugin host, as far as clients download from it (Table 8).

IceLib clients fetch status icons and response-management files from the CIC
server over HTTP (8018) and HTTPS (8019), directly or through the reverse proxy's
``/<Server>/http/...`` and ``/<Server>/httpsecure/...`` routes. The reference
Notifier serves the same here, so those routes have a real backend in tests and
in the demo: either a directory (``twistd notifier --resources DIR``) or a small
built-in set of demo files:

    /status-icons/<Status>.png      16x16 icons: Available, Away, Busy, Do Not Disturb, ...
    /responses/greetings.xml        response-management documents
    /responses/closings.xml
    /version.txt

Answers carry ``X-Resource-Host: <http|https>`` so route tests can tell which port
served them. Only GET and HEAD are allowed.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote

from twisted.web.resource import Resource
from twisted.web.server import Request, Site

STATUS_COLOURS: Mapping[str, tuple[int, int, int]] = {
    "Available": (0x2E, 0xA0, 0x43),
    "Away": (0xF2, 0xC1, 0x1D),
    "Busy": (0xD6, 0x33, 0x2F),
    "Do Not Disturb": (0x9C, 0x1C, 0x1C),
    "At Lunch": (0xF0, 0x8A, 0x24),
    "Out of the Office": (0x80, 0x80, 0x80),
}

_RESPONSES = {
    "greetings.xml": [
        ("Hello", "Hello, thank you for contacting us. How can I help?"),
        ("Hold", "Please hold while I look into this for you."),
    ],
    "closings.xml": [
        ("Thanks", "Thank you for contacting us. Have a good day!"),
        ("Survey", "You may receive a short survey about this conversation."),
    ],
}


def png(rgb: tuple[int, int, int], size: int = 16) -> bytes:
    """A solid-colour RGB PNG image."""
    row = b"\x00" + bytes(rgb) * size  # filter byte 0, then the pixels
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * size))
        + chunk(b"IEND", b"")
    )


def _responses_xml(items: list[tuple[str, str]]) -> bytes:
    lines = ['<?xml version="1.0" encoding="utf-8"?>', "<responses>"]
    lines += [f'  <response name="{name}">{text}</response>' for name, text in items]
    return ("\n".join([*lines, "</responses>"]) + "\n").encode("utf-8")


def demo_files() -> dict[str, tuple[bytes, str]]:
    """The built-in files: path -> (content, content type)."""
    files: dict[str, tuple[bytes, str]] = {
        f"/status-icons/{name}.png": (png(rgb), "image/png") for name, rgb in STATUS_COLOURS.items()
    }
    for name, items in _RESPONSES.items():
        files[f"/responses/{name}"] = (_responses_xml(items), "application/xml")
    files["/version.txt"] = (b"smbridge reference Notifier resource host\n", "text/plain")
    return files


class FilesResource(Resource):
    """Serves an in-memory mapping of paths to files."""

    isLeaf = True

    def __init__(self, files: Mapping[str, tuple[bytes, str]], label: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.files = dict(files)
        self.label = label.encode("ascii")

    def render(self, request: Request) -> bytes:
        request.setHeader(b"x-resource-host", self.label)
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            return b"GET or HEAD only\n"
        path = unquote((request.path or b"/").decode("utf-8", "replace"))
        found = self.files.get(path)
        if found is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain")
            return b"no such resource\n"
        content, content_type = found
        request.setHeader(b"content-type", content_type.encode("ascii"))
        return content


class _Labelled(Resource):
    """Adds ``X-Resource-Host`` in front of a directory (twisted.web.static.File)."""

    def __init__(self, inner: Resource, label: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.inner = inner
        self.label = label.encode("ascii")

    def getChildWithDefault(self, path: bytes, request: Request) -> Resource:
        request.setHeader(b"x-resource-host", self.label)
        child: Resource = self.inner.getChildWithDefault(path, request)
        return child

    def render(self, request: Request) -> bytes:
        request.setHeader(b"x-resource-host", self.label)
        body: bytes = self.inner.render(request)
        return body


def resource_site(label: str, directory: Path | None = None) -> Site:
    """The site of one resource port (``label`` is ``http`` or ``https``)."""
    root: Resource
    if directory is not None:
        from twisted.web.static import File  # imported here: it warns on import

        root = _Labelled(File(str(directory)), label)
    else:
        root = FilesResource(demo_files(), label)
    site = Site(root)
    site.noisy = False
    return site
