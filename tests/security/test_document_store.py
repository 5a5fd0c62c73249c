"""A clinic's raw NATS credentials against the document store: no read, no listing, no planted document.

Documents reach clinics only through the gateway and the portal, which check that the
token's or member's clinic is a party to the referral. Only those two hub users may use
the object store and its per-referral index (``runtime.broker.permissions``); a clinic's account has
no JetStream and imports neither. The positive control stores a document as ``portal``
and reads it back as ``gateway``, so the store the attacks aim at is real and populated.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import nats
import nats.errors
import pytest
import pytest_asyncio

from referral_hub.documents import domain as documents
from referral_hub.documents.store import DocumentStore
from referral_hub.runtime.broker import credentials, permissions
from referral_hub.runtime.jetstream import topology
from referral_hub.runtime.jetstream.provision import provision_as_operator
from referral_hub.runtime.jetstream.registry_cache import load_registry_file
from tests.helpers import secure_server

from .hostile import Hostile, describe_all, report

pytestmark = pytest.mark.asyncio(loop_scope="module")

CLINICS = [clinic.id for clinic in load_registry_file().clinics]
A = "harbor-pt"
OBJECTS = f"OBJ_{topology.GATEWAY_DOCUMENTS}"
INDEX = f"KV_{topology.DOCUMENTS_INDEX_KV}"
BUCKET = topology.GATEWAY_DOCUMENTS
REFERRAL = uuid.uuid4()
LETTER = b"%PDF-1.7\nconfidential referral letter"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stored(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[str, documents.DocumentMeta]]:
    """A secured, provisioned server holding one document, stored as ``portal``; its URL and metadata."""
    with pytest.MonkeyPatch.context() as patch:
        server = secure_server(tmp_path_factory.mktemp("documents"), patch, CLINICS)
        server.start()
        try:
            await provision_as_operator(server.url, registry=load_registry_file())
            portal = await nats.connect(server.url, **credentials.for_hub_user(permissions.PORTAL).connect_options())
            meta = documents.describe(
                data=LETTER,
                referral_id=REFERRAL,
                patient_ref="pt-sec-docs-01",
                title="letter.pdf",
                content_type="application/pdf",
                author=A,
                created=datetime.now(UTC),
                max_bytes=topology.GATEWAY_DOCUMENT_MAX_BYTES,
            )
            await (await DocumentStore.bind(portal.jetstream())).put(meta, LETTER)
            await portal.close()
            yield server.url, meta
        finally:
            server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def clinic(stored: tuple[str, documents.DocumentMeta]) -> AsyncIterator[Hostile]:
    """Harbor PT's raw connection with its valid key (a party to nothing here, and it would not matter)."""
    hostile = await Hostile.connect(stored[0], f"clinic {A}", credentials.for_clinic(A))
    yield hostile
    with contextlib.suppress(nats.errors.Error):
        await hostile.close()


async def test_the_gateway_reads_what_the_portal_stored(stored: tuple[str, documents.DocumentMeta]) -> None:
    """The positive control: the store is there, shared, and listed per referral."""
    url, meta = stored
    gateway = await nats.connect(url, **credentials.for_hub_user(permissions.GATEWAY).connect_options())
    try:
        store = await DocumentStore.bind(gateway.jetstream())
        assert await store.for_referral(REFERRAL) == [meta]
        assert await store.read(await store.meta(meta.id)) == LETTER
    finally:
        await gateway.close()


async def test_a_clinic_cannot_read_or_list_documents_through_jetstream(
    stored: tuple[str, documents.DocumentMeta], clinic: Hostile
) -> None:
    _, meta = stored
    attempts = [
        await clinic.attempt(f"$JS.API.STREAM.INFO.{OBJECTS}"),
        await clinic.attempt(
            f"$JS.API.STREAM.MSG.GET.{OBJECTS}", {"last_by_subj": f"$O.{topology.GATEWAY_DOCUMENTS}.M.>"}
        ),
        await clinic.attempt(f"$JS.API.DIRECT.GET.{OBJECTS}", {"seq": 1}),
        await clinic.attempt(f"$JS.API.CONSUMER.CREATE.{OBJECTS}", {"stream_name": OBJECTS, "config": {}}),
        await clinic.attempt(f"$JS.API.STREAM.INFO.{INDEX}"),
        await clinic.attempt(f"$JS.API.DIRECT.GET.{INDEX}.$KV.{topology.DOCUMENTS_INDEX_KV}.{meta.referral_id}"),
        await clinic.attempt(f"$JS.API.STREAM.MSG.GET.{INDEX}", {"seq": 1}),
    ]
    report("clinic reads the document store or its index via $JS.API", "refused", describe_all(attempts))
    assert all(outcome.refused for outcome in attempts), [outcome.describe() for outcome in attempts]
    assert not any(outcome.reply and LETTER.decode() in str(outcome.reply) for outcome in attempts)


async def test_a_clinic_cannot_subscribe_to_or_plant_documents(
    stored: tuple[str, documents.DocumentMeta], clinic: Hostile
) -> None:
    url, meta = stored
    refusals = [
        (await clinic.subscribe_refused(f"$O.{topology.GATEWAY_DOCUMENTS}.>"))[0],
        (await clinic.subscribe_refused(f"$KV.{topology.DOCUMENTS_INDEX_KV}.>"))[0],
        await clinic.publish_refused(f"$KV.{topology.DOCUMENTS_INDEX_KV}.{meta.referral_id}", b"[]"),
        await clinic.publish_refused(f"$O.{topology.GATEWAY_DOCUMENTS}.C.planted", b"<script>"),
    ]
    report("clinic subscribes to or writes the document store or index", "refused", f"{sum(refusals)} of 4 refused")
    assert all(refusals)

    # The referral still lists exactly the one document the portal stored.
    portal = await nats.connect(url, **credentials.for_hub_user(permissions.PORTAL).connect_options())
    try:
        assert await (await DocumentStore.bind(portal.jetstream())).for_referral(REFERRAL) == [meta]
    finally:
        await portal.close()


async def test_a_clinic_past_its_document_quota_is_refused_before_any_byte_is_stored(
    stored: tuple[str, documents.DocumentMeta],
) -> None:
    url, _ = stored
    author, referral = "summit-chiro", uuid.uuid4()
    portal = await nats.connect(url, **credentials.for_hub_user(permissions.PORTAL).connect_options())
    try:
        store = await DocumentStore.bind(portal.jetstream())
        store.quota = 2 * len(LETTER)

        def upload() -> documents.DocumentMeta:
            return documents.describe(
                data=LETTER,
                referral_id=referral,
                patient_ref="pt-sec-docs-02",
                title="letter.pdf",
                content_type="application/pdf",
                author=author,
                created=datetime.now(UTC),
                max_bytes=topology.GATEWAY_DOCUMENT_MAX_BYTES,
            )

        kept = [upload(), upload()]
        for meta in kept:
            await store.put(meta, LETTER)
        refused = upload()
        with pytest.raises(documents.DocumentQuotaError):
            await store.put(refused, LETTER)
        report("clinic uploads past its document quota", "refused, nothing stored", "DocumentQuotaError")
        assert await store.for_referral(referral) == kept
        with pytest.raises(documents.DocumentNotFoundError):
            await store.meta(refused.id)
    finally:
        await portal.close()
