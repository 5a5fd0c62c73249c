"""Routine notifications held outside a clinic's working hours, and the digest they become. Pure.

A digest is a stored record (``adapters.digest_key``) like a page or a silence: the service
adds to it while the clinic is closed and empties it, in one compare-and-set write, when the
digest is sent.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec

from referral_hub.runtime.messaging.ids import derived_id


class DigestItem(msgspec.Struct, frozen=True, kw_only=True):
    """One routine notification waiting for working hours."""

    notification_id: UUID
    topic: str
    summary: str
    at: datetime


class Digest(msgspec.Struct, frozen=True, kw_only=True):
    """A clinic's routine notifications held outside working hours."""

    clinic: str
    items: tuple[DigestItem, ...] = ()


def with_item(digest: Digest | None, clinic: str, item: DigestItem) -> Digest | None:
    """The digest with ``item`` added; ``None`` when it already holds it (a redelivered event)."""
    current = digest or Digest(clinic=clinic)
    if any(i.notification_id == item.notification_id for i in current.items):
        return None
    return msgspec.structs.replace(current, items=(*current.items, item))


def digest_text(items: tuple[DigestItem, ...]) -> str:
    """The digest's body: one line per held notification, oldest first."""
    lines = "\n".join(f"- {i.at.isoformat(timespec='minutes')} {i.topic}: {i.summary}" for i in items)
    return f"{len(items)} notifications:\n{lines}"


def digest_id(clinic: str, items: tuple[DigestItem, ...]) -> UUID:
    """The same digest, sent again after a crash, carries the same id."""
    return derived_id(f"{clinic}/{items[0].notification_id}/{len(items)}", "digest")
