"""A document's metadata, the checks on an upload, and its audit record. Pure: no I/O."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import datetime
from typing import Final

import msgspec

from referral_hub.contracts.access import AccessViewed
from referral_hub.errors import HubError
from referral_hub.referrals.fhir_task import RESOURCE_NAMESPACE

MAX_PER_REFERRAL: Final = 500
"""Documents one referral may hold: its index entry (a few hundred bytes each) stays far below a NATS message."""
CLINIC_QUOTA_BYTES: Final = 2 * 1024 * 1024 * 1024
"""Document bytes one clinic may store in all: one clinic cannot fill the hub's disk for the others."""
TITLE_CHARS: Final = 120
CONTENT_TYPE_CHARS: Final = 100
_NAME: Final = r"[A-Za-z0-9!#$&^_.+-]+"
MEDIA_TYPE: Final = re.compile(rf"{_NAME}/{_NAME}(?: ?; ?{_NAME}=(?:{_NAME}|\"[\x20-\x21\x23-\x7e]*\"))*")
"""A media type as RFC 9110 writes one: it is served back as ``Content-Type``, so no CR, LF or other control."""


class DocumentError(HubError):
    """A document could not be stored or read."""


class DocumentRejectedError(DocumentError):
    """The upload itself is unacceptable (empty, too large, too many): the sender can fix it."""


class DocumentTooLargeError(DocumentRejectedError):
    """Over the limit the caller gives (``topology.GATEWAY_DOCUMENT_MAX_BYTES`` at both doors)."""


class DocumentQuotaError(DocumentRejectedError):
    """The author's clinic has stored :data:`CLINIC_QUOTA_BYTES` already (more than this upload leaves room for)."""


class DocumentNotFoundError(DocumentError):
    """No such document (or its metadata is unreadable): callers answer as for a stranger's id."""


class DocumentCorruptError(DocumentError):
    """The stored bytes no longer match the SHA-256 recorded at upload: never served."""


class DocumentMeta(msgspec.Struct, frozen=True, kw_only=True):
    """What the store keeps beside a document's bytes (the object's description, and the index)."""

    id: str
    referral_id: uuid.UUID
    task_id: str
    patient_ref: str
    title: str
    content_type: str
    size: int
    sha256: str
    author: str
    created: datetime


META_LIST: Final = msgspec.json.Decoder(list[DocumentMeta])
"""Decodes a referral's index entry."""


def task_id_of(referral_id: uuid.UUID) -> str:
    """The referral's FHIR Task id, as ``referrals.fhir_task.resource_id`` derives it (UUIDv5 of ``Task/<id>``)."""
    return str(uuid.uuid5(RESOURCE_NAMESPACE, f"Task/{referral_id}"))


def describe(  # noqa: PLR0913 - every field a document's record needs
    *,
    data: bytes,
    referral_id: uuid.UUID,
    patient_ref: str,
    title: str,
    content_type: str,
    author: str,
    created: datetime,
    max_bytes: int,
) -> DocumentMeta:
    """A new document's metadata, its SHA-256 computed here; refuses an empty or oversized one."""
    if not data:
        msg = f"{title or 'the document'} is empty"
        raise DocumentRejectedError(msg)
    if len(data) > max_bytes:
        msg = f"{title or 'the document'} is {len(data)} bytes; at most {max_bytes} are accepted"
        raise DocumentTooLargeError(msg)
    media_type = content_type.strip() or "application/octet-stream"
    if len(media_type) > CONTENT_TYPE_CHARS or not MEDIA_TYPE.fullmatch(media_type):
        msg = f"the content type must be a media type (type/subtype) of at most {CONTENT_TYPE_CHARS} characters"
        raise DocumentRejectedError(msg)
    return DocumentMeta(
        id=str(uuid.uuid4()),
        referral_id=referral_id,
        task_id=task_id_of(referral_id),
        patient_ref=patient_ref,
        title=(title.strip() or "document")[:TITLE_CHARS],
        content_type=media_type,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        author=author,
        created=created,
    )


def usage_key(clinic: str) -> str:
    """The index key counting a clinic's stored bytes (referral keys are UUIDs, so never this)."""
    return f"usage.{clinic}"


def check_quota(used: int, size: int, quota: int = CLINIC_QUOTA_BYTES) -> int:
    """The clinic's usage with ``size`` more bytes; :class:`DocumentQuotaError` past ``quota``."""
    if used + size > quota:
        msg = f"the clinic's documents would take {used + size} bytes; its quota is {quota}"
        raise DocumentQuotaError(msg)
    return used + size


def access_record(meta: DocumentMeta, *, clinic: str, actor: str, now: datetime, what: str) -> AccessViewed:
    """The audit log's record of an upload or read: the document, the verb and its SHA-256.

    Sent on the acting clinic's own out subject, so the audit service chains it like any
    submission (a FHIR AuditEvent read when exported).
    """
    return AccessViewed(
        message_id=uuid.uuid4(),
        occurred_at=now,
        sender_clinic=clinic,
        actor=actor,
        correlation_id=uuid.uuid4(),
        page=f"DocumentReference/{meta.id} {what} sha256:{meta.sha256}",
        referral_id=str(meta.referral_id),
        patient_ref=meta.patient_ref,
    )
