"""Every relative link in the README and the docs points at a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([*ROOT.glob("*.md"), *ROOT.glob("docs/**/*.md"), *ROOT.glob("deploy/**/*.md")])
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_targets(page: Path) -> list[str]:
    """Link targets that are paths: no scheme, no bare anchor."""
    targets = (match.group(1) for match in LINK.finditer(page.read_text(encoding="utf-8")))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_the_docs_are_found() -> None:
    assert {"README.md", "SECURITY.md"} <= {page.name for page in PAGES}
    assert len(PAGES) > 10


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = [t for t in relative_targets(page) if not (page.parent / t.split("#")[0]).exists()]

    assert broken == []
