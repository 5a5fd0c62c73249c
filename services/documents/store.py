"""The document store's I/O: JetStream's object store for the bytes, a KV bucket for each referral's list."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, Final

import msgspec
import nats.errors
import nats.js.errors
from nats.js.api import ObjectMeta
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from referral_hub.documents.domain import (
    CLINIC_QUOTA_BYTES,
    MAX_PER_REFERRAL,
    META_LIST,
    DocumentCorruptError,
    DocumentError,
    DocumentMeta,
    DocumentNotFoundError,
    DocumentRejectedError,
    check_quota,
    usage_key,
)
from referral_hub.runtime.jetstream import topology

INDEX_WRITE_ATTEMPTS: Final = 16
"""Compare-and-set retries when several uploads to one referral race."""


class DocumentStore:
    """The object store and its per-referral index, bound on a hub connection allowed to use both."""

    def __init__(self, objects: ObjectStore, index: KeyValue, quota: int = CLINIC_QUOTA_BYTES) -> None:
        """Wrap the bound buckets; use :meth:`bind`."""
        self._objects = objects
        self._index = index
        self.quota = quota

    @classmethod
    async def bind(cls, js: Any) -> DocumentStore:  # noqa: ANN401 - nats-py's JetStreamContext
        """Bind the provisioned object store and index (as ``gateway`` or ``portal``)."""
        objects = await js.object_store(topology.GATEWAY_DOCUMENTS)
        index = await js.key_value(topology.DOCUMENTS_INDEX_KV)
        return cls(objects, index)

    async def put(self, meta: DocumentMeta, data: bytes) -> None:
        """Store the bytes, then list them under their referral.

        The object goes first: a failure between the two leaves bytes nobody lists (and
        the caller is told), never a listed document without bytes. A referral already
        holding :data:`MAX_PER_REFERRAL` documents is refused before any byte is written.
        """
        if hashlib.sha256(data).hexdigest() != meta.sha256 or len(data) != meta.size:
            msg = "the bytes are not the ones the metadata describes"
            raise DocumentError(msg)
        listed, _ = await self._listed(str(meta.referral_id))
        _check_room(listed)
        await self._reserve(meta.author, meta.size)
        description = msgspec.json.encode(meta).decode()
        await self._objects.put(meta.id, data, ObjectMeta(name=meta.id, description=description))
        await self._add_to_index(meta)

    async def _reserve(self, clinic: str, size: int) -> None:
        """Count ``size`` more bytes against the clinic's quota before any byte is stored.

        Compare-and-set, so uploads racing on several replicas and both doors are counted
        once each. A failure after this leaves the bytes counted and not stored: the quota
        errs towards refusing, never towards letting a clinic past it.
        """
        key = usage_key(clinic)
        for _ in range(INDEX_WRITE_ATTEMPTS):
            try:
                entry = await self._index.get(key)
                used, revision = int(entry.value or b"0"), int(entry.revision or 0)
            except nats.js.errors.KeyNotFoundError:
                used, revision = 0, 0
            if await self._write(key, str(check_quota(used, size, self.quota)).encode(), revision):
                return
        msg = "the clinic's document usage kept changing; try again"
        raise DocumentError(msg)

    async def _add_to_index(self, meta: DocumentMeta) -> None:
        key = str(meta.referral_id)
        for _ in range(INDEX_WRITE_ATTEMPTS):
            listed, revision = await self._listed(key)
            if any(known.id == meta.id for known in listed):
                return
            _check_room(listed)
            if await self._write(key, msgspec.json.encode([*listed, meta]), revision):
                return
        msg = "the referral's document list kept changing; try again"
        raise DocumentError(msg)

    async def _write(self, key: str, value: bytes, revision: int) -> bool:
        """Compare-and-set ``key`` in the index (create at revision 0); False when another writer came first."""
        try:
            if revision == 0:
                await self._index.create(key, value)
            else:
                await self._index.update(key, value, last=revision)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError):
            return False
        return True

    async def _listed(self, key: str) -> tuple[list[DocumentMeta], int]:
        try:
            entry = await self._index.get(key)
        except nats.js.errors.KeyNotFoundError:
            return [], 0
        try:
            listed = META_LIST.decode(entry.value) if entry.value else []
        except msgspec.DecodeError as exc:
            msg = f"the document list of referral {key} cannot be read"
            raise DocumentError(msg) from exc
        return listed, int(entry.revision or 0)

    async def for_referral(self, referral_id: uuid.UUID) -> list[DocumentMeta]:
        """The referral's documents, oldest first: one KV read."""
        listed, _ = await self._listed(str(referral_id))
        return listed

    async def meta(self, document_id: str) -> DocumentMeta:
        """A document's metadata by id, from the object itself (documents stored before the index too)."""
        try:
            info = await self._objects.get_info(document_id)
            return msgspec.json.decode(info.description or "", type=DocumentMeta)
        except (nats.js.errors.ObjectNotFoundError, msgspec.DecodeError, nats.errors.Error) as exc:
            raise DocumentNotFoundError(document_id) from exc

    async def read(self, meta: DocumentMeta) -> bytes:
        """A document's bytes, checked against the SHA-256 recorded when it was stored."""
        try:
            stored = await self._objects.get(meta.id)
        except nats.js.errors.ObjectNotFoundError as exc:
            raise DocumentNotFoundError(meta.id) from exc
        data = stored.data or b""
        if hashlib.sha256(data).hexdigest() != meta.sha256:
            msg = f"document {meta.id} does not match its recorded SHA-256"
            raise DocumentCorruptError(msg)
        return data


def _check_room(listed: list[DocumentMeta]) -> None:
    if len(listed) >= MAX_PER_REFERRAL:
        msg = f"a referral holds at most {MAX_PER_REFERRAL} documents"
        raise DocumentRejectedError(msg)
