"""The Python examples in docs/tunnel.md run and print what they say they print."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "tunnel.md"


def test_tunnel_doc_examples() -> None:
    """Every >>> example in docs/tunnel.md gives the output written under it."""
    blocks = [
        b
        for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
        if b.lstrip().startswith(">>>")
    ]
    assert len(blocks) == 2
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner()
    # The page's examples continue one another, so they run as one session.
    runner.run(parser.get_doctest("\n".join(blocks), {}, "tunnel.md", str(DOC), 0))
    assert runner.summarize(verbose=False).failed == 0
