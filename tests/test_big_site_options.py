"""``--piece-bytes``: the bound on pieces of large answers reaches every part that cuts them."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.python import usage

from smbridge.codec import catalog as c
from smbridge.codec.pieces import PIECE_BYTES
from smbridge.service import BridgeService
from smbridge.tap import Options
from smbridge.testing import RouterHarness


def _options(tmp_path: Path, *extra: str) -> Options:
    options = Options()
    options.parseOptions(["--demo", "--work-path", str(tmp_path), *extra])
    return options


def test_piece_bytes_reaches_directory_pages_watches_and_resume(tmp_path: Path) -> None:
    """--piece-bytes sets the page bound, the watch reply bound and the reset bound."""
    config = _options(tmp_path, "--piece-bytes", "65536").config
    assert config is not None and config.piece_bytes == 65536
    router = BridgeService(config, Clock()).router
    assert router.directories.page_bytes == 65536
    assert router.watches.piece_bytes == 65536
    assert router.resumer.piece_bytes == 65536


def test_piece_bytes_defaults_to_a_quarter_of_the_frame_limit(tmp_path: Path) -> None:
    """Without the option, pieces are 256 KiB."""
    config = _options(tmp_path).config
    assert config is not None and config.piece_bytes == PIECE_BYTES == 256 * 1024


@pytest.mark.parametrize("value", ["100", "1048576"])
def test_piece_bytes_out_of_range_is_refused(tmp_path: Path, value: str) -> None:
    """A piece too small to be useful, or one whose frame could pass 1 MiB, is a usage error."""
    with pytest.raises(usage.UsageError, match="--piece-bytes must be 4096..1048562"):
        _options(tmp_path, "--piece-bytes", value)


def test_a_smaller_bound_gives_smaller_watch_pieces() -> None:
    """With a 4 KiB bound a 100-call queue answers in several pieces, each within it."""
    h = RouterHarness()
    h.router.set_piece_bytes(4096)
    conn, t, _ = h.logon()
    h.send(conn, c.WATCH_QUEUE, 5, {"queue": "Sales"})
    (sub,) = h.upstream()
    calls = [{"id": f"c{i}", "from": "x" * 100} for i in range(100)]
    h.serve(sub, {"queue": "Sales", "interactions": calls})
    frames = h.received(t)
    assert len(frames) > 2 and all(len(f.payload) <= 4096 for f in frames)
    got = frames[0].parsed()["interactions"] + [i for f in frames[1:] for i in f.parsed()["added"]]
    assert got == calls
