"""The reference Notifier's resource host (the CIC HTTP plugin host stand-in), in memory."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from twisted.web.test.requesthelper import DummyRequest

from smbridge.notifier.resources import (
    STATUS_COLOURS,
    FilesResource,
    demo_files,
    png,
    resource_site,
)


def render(resource, path: bytes, method: bytes = b"GET") -> tuple[int, bytes, DummyRequest]:
    request = DummyRequest(path.strip(b"/").split(b"/"))
    request.path = path
    request.method = method
    body = resource.render(request)
    return request.responseCode or 200, body, request


def test_png_is_a_valid_image() -> None:
    """The status icons are real PNGs: signature, IHDR of 16x16 RGB, CRCs that check."""
    data = png((1, 2, 3))
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF
        chunks.append((tag, body))
        pos += 12 + length
    assert [t for t, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    assert struct.unpack(">II", chunks[0][1][:8]) == (16, 16)
    assert zlib.decompress(chunks[1][1])[:4] == b"\x00\x01\x02\x03"


def test_demo_files_are_served_by_decoded_path() -> None:
    """A file is found by its percent-decoded path, with its type and the host label."""
    resource = FilesResource(demo_files(), "https")
    code, body, request = render(resource, b"/status-icons/Do%20Not%20Disturb.png")
    assert (code, body) == (200, png(STATUS_COLOURS["Do Not Disturb"]))
    assert request.responseHeaders.getRawHeaders(b"content-type") == [b"image/png"]
    assert request.responseHeaders.getRawHeaders(b"x-resource-host") == [b"https"]


def test_missing_files_and_other_methods() -> None:
    """An unknown path is 404; methods other than GET and HEAD are 405."""
    resource = FilesResource(demo_files(), "http")
    assert render(resource, b"/nope.png")[0] == 404
    code, _, request = render(resource, b"/version.txt", b"POST")
    assert code == 405
    assert request.responseHeaders.getRawHeaders(b"allow") == [b"GET, HEAD"]


@pytest.mark.filterwarnings("ignore:twisted.web.resource._Unsafe:DeprecationWarning")
def test_directory_mode(tmp_path: Path) -> None:
    """With a directory the site serves its files (twisted.web.static.File)."""
    (tmp_path / "hello.txt").write_text("hi")
    site = resource_site("http", tmp_path)
    request = DummyRequest([b"hello.txt"])
    child = site.getResourceFor(request)
    assert Path(child.path) == tmp_path / "hello.txt"
    assert request.responseHeaders.getRawHeaders(b"x-resource-host") == [b"http"]
