"""How a referral's documents are listed and served: sizes in words, types that cannot run script. Pure."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from referral_hub.documents.domain import DocumentMeta
from referral_hub.portal.domain import local_time


@dataclass(frozen=True)
class DocumentRow:
    """One document on a referral page: what it is, who attached it, when (clinic time)."""

    id: str
    title: str
    content_type: str
    size: str
    author: str
    when: str


def size_words(size: int) -> str:
    """A byte count as a member reads it: 812 bytes, 14 KiB, 3.2 MiB."""
    if size < 1024:  # noqa: PLR2004 - one KiB
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


def document_rows(metas: Iterable[DocumentMeta], zone: str) -> list[DocumentRow]:
    """A referral's documents, oldest first, with sizes in words and times in ``zone``."""
    ordered = sorted(metas, key=lambda meta: meta.created)
    return [
        DocumentRow(
            id=meta.id,
            title=meta.title,
            content_type=meta.content_type,
            size=size_words(meta.size),
            author=meta.author,
            when=local_time(meta.created, zone),
        )
        for meta in ordered
    ]


INERT_TYPES: Final = frozenset({"application/pdf", "text/plain", "image/png", "image/jpeg", "image/gif"})
"""Types a download keeps; anything else (HTML, SVG, scripts) goes out as ``application/octet-stream``."""


def download_type(content_type: str) -> str:
    """The ``Content-Type`` a download is served with: the stored one only when it cannot run script."""
    declared = content_type.split(";", 1)[0].strip().lower()
    return declared if declared in INERT_TYPES else "application/octet-stream"


def download_name(title: str) -> str:
    """A ``Content-Disposition`` filename: printable ASCII without quotes or path separators."""
    kept = re.sub(r"[^A-Za-z0-9._ -]", "_", title).strip(" .") or "document"
    return kept[:100]
