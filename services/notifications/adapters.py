"""Notifications' state in JetStream KV: which record lives under which key, and the stores.

Pages live in their own bucket, keyed by page id (derived from the dedup key, so no index).
Silences, per-patient absolute alerts and digests share the state bucket under prefixes.
KV keys are subjects, so a patient is keyed by a hash of the reference, never by the reference.

The handlers read the views (kept current by KV watches, so reads never touch the server)
and write through the stores with compare-and-set (``runtime.jetstream.kvstore.update_with_retry``).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Final
from uuid import UUID

from nats.js import JetStreamContext

from referral_hub.errors import HubError
from referral_hub.notifications.digests import Digest
from referral_hub.notifications.page_rules import Page, PageStatus, PatientRecord, Silence
from referral_hub.runtime.jetstream import topology
from referral_hub.runtime.jetstream.kvstore import KvStore, KvView, Records
from referral_hub.runtime.jetstream.registry_cache import RegistryCache

SILENCE_PREFIX: Final = "silence."
DIGEST_PREFIX: Final = "digest."
PATIENT_PREFIX: Final = "patient."
PATIENT_HASH_CHARS: Final = 40


def patient_hash(patient_ref: str) -> str:
    """KV keys are subjects, so never the patient reference itself."""
    return hashlib.sha256(patient_ref.encode()).hexdigest()[:PATIENT_HASH_CHARS]


def patient_key(patient_ref: str) -> str:
    """The KV key of a patient's record."""
    return PATIENT_PREFIX + patient_hash(patient_ref)


def page_key(page_id: UUID) -> str:
    """The KV key of a page in the pages bucket."""
    return str(page_id)


def digest_key(clinic: str) -> str:
    """The KV key of a clinic's digest."""
    return DIGEST_PREFIX + clinic


@dataclass(frozen=True)
class Views:
    """What the service reads without a round trip, each kept current by a KV watch."""

    open_pages: KvView[Page] = field(
        default_factory=lambda: KvView(Page, keep=lambda page: page.status is PageStatus.OPEN)
    )
    silences: KvView[Silence] = field(default_factory=lambda: KvView(Silence, SILENCE_PREFIX))
    absolute_alerts: KvView[PatientRecord] = field(
        default_factory=lambda: KvView(PatientRecord, PATIENT_PREFIX, keep=lambda record: bool(record.absolute))
    )
    """Read for inhibition: current within a watch round-trip. A relative page that slips
    through in that window pages (the safe direction); it is never the other way round."""
    pending_digests: KvView[Digest] = field(
        default_factory=lambda: KvView(Digest, DIGEST_PREFIX, keep=lambda digest: bool(digest.items))
    )

    def loaded(self) -> tuple[asyncio.Event, ...]:
        """Set once each view has read its bucket through."""
        return (
            self.open_pages.loaded,
            self.silences.loaded,
            self.absolute_alerts.loaded,
            self.pending_digests.loaded,
        )

    async def follow(self, js: JetStreamContext) -> None:
        """Forever: fold every KV update into its view."""
        state = await js.key_value(topology.NOTIFY_STATE_KV)
        await asyncio.gather(
            self.open_pages.follow(await js.key_value(topology.PAGES_KV)),
            self.silences.follow(state),
            self.absolute_alerts.follow(state),
            self.pending_digests.follow(state),
        )


@dataclass(frozen=True)
class Stores:
    """Notifications' KV state: compare-and-set stores, and the views read between writes."""

    pages: Records[Page]
    patients: Records[PatientRecord]
    digests: Records[Digest]
    views: Views


async def wait_loaded(registry: RegistryCache, views: Views, seconds: float) -> None:
    """Wait until the registry and every view have read their buckets through."""
    try:
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in (registry.loaded, *views.loaded()))), seconds)
    except TimeoutError as exc:
        msg = "notifications state did not load; is the hub provisioned (hubctl provision)?"
        raise HubError(msg) from exc


async def open_stores(js: JetStreamContext, views: Views) -> Stores:
    """The stores over the provisioned buckets (``hubctl provision`` creates them)."""
    state = await js.key_value(topology.NOTIFY_STATE_KV)
    return Stores(
        pages=KvStore(await js.key_value(topology.PAGES_KV), Page),
        patients=KvStore(state, PatientRecord),
        digests=KvStore(state, Digest),
        views=views,
    )
