"""The Python examples in docs/ run and print what they say they print."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _doctest_blocks(path: Path) -> list[str]:
    return [b for b in BLOCK.findall(path.read_text()) if b.lstrip().startswith(">>>")]


@pytest.mark.parametrize("name", ["protocol.md"])
def test_doc_examples(name: str) -> None:
    """Every >>> example in the page gives the output written under it."""
    blocks = _doctest_blocks(DOCS / name)
    assert blocks, f"{name} has no examples"
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner()
    for i, block in enumerate(blocks):
        test = parser.get_doctest(block, {}, f"{name}[{i}]", str(DOCS / name), 0)
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def test_docs_link_to_existing_pages() -> None:
    """docs/*.md named in the README and docs exist."""
    text = (DOCS.parent / "README.md").read_text() + "".join(
        p.read_text() for p in DOCS.glob("*.md")
    )
    for name in set(re.findall(r"docs/([a-z-]+\.md)", text)):
        assert (DOCS / name).exists(), name
