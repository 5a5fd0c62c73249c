"""Hostile clinics and sealed patient details, against the real referrals service on a secured hub.

Every clinic registered a sealing key; the tests hold the key store a hosted agent would.
Each attack gets a typed rejection in the attacker's inbox (nothing is lost: the hub
answered it), changes no referral, and the rejection says nothing about what is sealed.
"""

from __future__ import annotations

from datetime import date
from uuid import UUID

import msgspec
import pytest
import pytest_asyncio

from referral_hub.client import ClinicClient, new_id, utc_now
from referral_hub.contracts.base import Message, Modality
from referral_hub.contracts.patient import PatientDetails, SealedDetails
from referral_hub.contracts.referrals import ReferralForward, ReferralRequest, ReferralRequested
from referral_hub.contracts.registry import Clinic
from referral_hub.contracts.rejections import Rejection, RejectionCode
from referral_hub.runtime.jetstream.registry_cache import load_registry_file, store_clinic
from referral_hub.sealing import parties
from referral_hub.sealing.keystore import KeyStore
from tests.helpers import eventually, referral_request

from .hostile import AttackedHub, report

pytestmark = pytest.mark.asyncio(loop_scope="module")

SENDER, RECIPIENT, OUTSIDER = "kneadwell-massage", "harbor-pt", "lotus-acu"
PERSON = PatientDetails(given="Sealia", family="Testwright", birth_date=date(1990, 1, 2), phones=("+1 555 0100 999",))


class Keyed:
    """The module's hub, the key store, the registry as stored, and one properly sealed referral."""

    def __init__(self, hub: AttackedHub, store: KeyStore, registry: dict[str, Clinic]) -> None:
        self.hub, self.store, self.registry = hub, store, registry
        self.first: ReferralRequest | None = None

    def request(self, sender: str = SENDER, recipient: str = RECIPIENT) -> ReferralRequest:
        modality = Modality.PHYSICAL_THERAPY if recipient == RECIPIENT else Modality.ACUPUNCTURE
        return referral_request(sender, recipient, modality=modality, patient_ref="pt-sealed-0001")

    def seal(self, request: ReferralRequest, holders: tuple[str, ...], sealer: str = SENDER) -> SealedDetails:
        return parties.seal_to(
            self.store,
            self.registry,
            PERSON,
            referral_id=request.referral_id,
            message_id=request.message_id,
            sealer=sealer,
            holders=holders,
        )

    async def answer(self, clinic: str, message: Message) -> Message:
        client = await self.hub.clinic(clinic)
        _, item = await client.send_and_wait(message, 20)
        assert item is not None, "the hub did not answer: the message is stored but unprocessed"
        return item.message


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def keyed(secured_hub: AttackedHub, tmp_path_factory: pytest.TempPathFactory) -> Keyed:
    store = KeyStore(tmp_path_factory.mktemp("seal-keys"))
    registry = {}
    for clinic in load_registry_file().clinics:
        registry[clinic.id] = msgspec.structs.replace(clinic, sealing_keys=(store.generate(clinic.id).public,))
        await store_clinic(secured_hub.admin.jetstream(), registry[clinic.id])
    found = Keyed(secured_hub, store, registry)
    request = found.request()
    sealed = msgspec.structs.replace(request, patient_details=found.seal(request, (SENDER, RECIPIENT)))

    async def accepted() -> bool:
        # The referrals service learns the new keys from its registry watch; until then it refuses.
        attempt = msgspec.structs.replace(sealed, message_id=new_id())
        attempt = msgspec.structs.replace(attempt, patient_details=found.seal(attempt, (SENDER, RECIPIENT)))
        answer = await found.answer(SENDER, attempt)
        if isinstance(answer, ReferralRequested):
            found.first = attempt
            return True
        return False

    await eventually(accepted, timeout=30, interval=0.5)
    return found


def refused(answer: Message, code: RejectionCode) -> bool:
    return isinstance(answer, Rejection) and answer.code == code


async def test_a_seal_swapped_in_from_another_referral_is_refused(keyed: Keyed) -> None:
    assert keyed.first is not None
    second = keyed.request()
    swapped = msgspec.structs.replace(second, patient_details=keyed.first.patient_details)
    answer = await keyed.answer(SENDER, swapped)
    report(
        "a clinic swaps the sealed details of one referral into another", "sealed_details_mismatch", repr(answer)[:120]
    )
    assert refused(answer, RejectionCode.SEALED_DETAILS_MISMATCH), answer


async def test_a_recipient_passing_off_a_received_seal_as_its_own_is_refused(keyed: Keyed) -> None:
    """Harbor received Kneadwell's seal; relabelled as Harbor's for a new referral, its signature no longer holds."""
    assert keyed.first is not None
    assert keyed.first.patient_details is not None
    own = keyed.request(RECIPIENT, OUTSIDER)
    relabelled = msgspec.structs.replace(
        keyed.first.patient_details,
        referral_id=own.referral_id,
        message_id=own.message_id,
        sealed_by=RECIPIENT,
        signer_key_id=keyed.store.current(RECIPIENT).key_id,
    )
    answer = await keyed.answer(RECIPIENT, msgspec.structs.replace(own, patient_details=relabelled))
    assert refused(answer, RejectionCode.SEALED_DETAILS_MISMATCH), answer


async def test_details_sealed_to_the_wrong_clinic_are_refused(keyed: Keyed) -> None:
    request = keyed.request()
    wrong = msgspec.structs.replace(request, patient_details=keyed.seal(request, (SENDER, OUTSIDER)))
    answer = await keyed.answer(SENDER, wrong)
    report(
        "a clinic seals a referral's details to a clinic that is not its recipient",
        "sealed_details_mismatch",
        repr(answer)[:120],
    )
    assert refused(answer, RejectionCode.SEALED_DETAILS_MISMATCH), answer


async def test_a_blob_too_large_is_a_schema_rejection(keyed: Keyed) -> None:
    request = keyed.request()
    sealed = keyed.seal(request, (SENDER, RECIPIENT))
    huge = tuple(msgspec.structs.replace(copy, blob=copy.blob * 60) for copy in sealed.copies)
    raw = msgspec.json.encode(
        msgspec.structs.replace(request, patient_details=msgspec.structs.replace(sealed, copies=huge))
    )
    client = await keyed.hub.clinic(SENDER)
    answer = await _raw_answer(client, request.message_id, raw)
    assert refused(answer, RejectionCode.SCHEMA_VIOLATION), answer


async def test_a_malformed_blob_is_a_schema_rejection(keyed: Keyed) -> None:
    request = keyed.request()
    body = msgspec.to_builtins(request) | {
        "patient_details": {"referral_id": str(request.referral_id), "copies": [{"clinic": RECIPIENT, "blob": "%%%"}]}
    }
    client = await keyed.hub.clinic(SENDER)
    answer = await _raw_answer(client, request.message_id, msgspec.json.encode(body))
    assert refused(answer, RejectionCode.SCHEMA_VIOLATION), answer


async def test_asking_for_a_reseal_of_a_referral_never_party_to_learns_nothing(keyed: Keyed) -> None:
    """Lotus forwards Kneadwell's referral to itself to be sent the details: the same answer as for no referral."""
    assert keyed.first is not None
    ids = (keyed.first.referral_id, new_id())
    answers = [
        await keyed.answer(OUTSIDER, _forward(referral_id, OUTSIDER, "riverside-wellness")) for referral_id in ids
    ]
    report(
        "a non-party asks for the details to be re-sealed to it",
        "unknown_referral, as for none",
        repr(answers[0])[:120],
    )
    assert all(refused(answer, RejectionCode.UNKNOWN_REFERRAL) for answer in answers), answers
    said = [
        getattr(answer, "reason", "").replace(str(referral_id), "ID")
        for answer, referral_id in zip(answers, ids, strict=True)
    ]
    assert said[0] == said[1]


async def test_a_forward_resealed_to_another_clinic_than_its_target_is_refused(keyed: Keyed) -> None:
    """Lotus, recipient of Harbor's referral, forwards it to Riverside but re-seals the details to Summit."""
    request = keyed.request(RECIPIENT, OUTSIDER)
    request = msgspec.structs.replace(request, patient_details=keyed.seal(request, (RECIPIENT, OUTSIDER), RECIPIENT))
    assert isinstance(await keyed.answer(RECIPIENT, request), ReferralRequested)
    assert request.patient_details is not None
    forward = _forward(request.referral_id, OUTSIDER, "riverside-wellness")
    wrong = parties.reseal(
        keyed.store,
        keyed.registry,
        request.patient_details,
        reader=OUTSIDER,
        message_id=forward.message_id,
        to_clinic="summit-chiro",
    )
    answer = await keyed.answer(OUTSIDER, msgspec.structs.replace(forward, patient_details=wrong))
    assert refused(answer, RejectionCode.SEALED_DETAILS_MISMATCH), answer


async def test_a_forward_resealed_to_its_target_reaches_the_clinic_that_joins(keyed: Keyed) -> None:
    request = keyed.request(RECIPIENT, OUTSIDER)
    request = msgspec.structs.replace(request, patient_details=keyed.seal(request, (RECIPIENT, OUTSIDER), RECIPIENT))
    assert isinstance(await keyed.answer(RECIPIENT, request), ReferralRequested)
    assert request.patient_details is not None
    forward = _forward(request.referral_id, OUTSIDER, "riverside-wellness")
    resealed = parties.reseal(
        keyed.store,
        keyed.registry,
        request.patient_details,
        reader=OUTSIDER,
        message_id=forward.message_id,
        to_clinic="riverside-wellness",
    )
    assert not isinstance(
        await keyed.answer(OUTSIDER, msgspec.structs.replace(forward, patient_details=resealed)), Rejection
    )
    joined = await keyed.hub.clinic("riverside-wellness")
    delivered = await eventually(lambda: _requested(joined, request.referral_id), timeout=20)
    opened = parties.read(
        keyed.store, keyed.registry, delivered.patient_details, request.referral_id, "riverside-wellness"
    )
    assert opened == PERSON


async def _requested(client: ClinicClient, referral_id: UUID) -> ReferralRequested | None:
    page = await client.read_page(0, 1000)
    found = [
        item.message
        for item in client._items(page)  # noqa: SLF001 - the client's own decoding
        if isinstance(item.message, ReferralRequested) and item.message.referral_id == referral_id
    ]
    return found[-1] if found else None


def _forward(referral_id: UUID, sender: str, to: str) -> ReferralForward:
    return ReferralForward(
        message_id=new_id(),
        occurred_at=utc_now(),
        sender_clinic=sender,
        actor={"lotus-acu": "raj.patel", "harbor-pt": "ben.okafor"}[sender],
        correlation_id=new_id(),
        referral_id=referral_id,
        patient_ref="pt-sealed-0001",
        to_clinic=to,
    )


async def _raw_answer(client: ClinicClient, message_id: UUID, body: bytes) -> Message:
    after = await client.last_event_number()
    await client.publish_raw("referral.request", body, msg_id=str(message_id))
    answer = await eventually(lambda: _after(client, after, message_id), timeout=20)
    assert isinstance(answer, Message)
    return answer


async def _after(client: ClinicClient, after: int, message_id: UUID) -> Message | None:
    page = await client.read_page(after, 100)
    for item in client._items(page):  # noqa: SLF001 - the client's own decoding
        if item.message.causation_id == message_id or getattr(item.message, "message_id", None) == message_id:
            return item.message
    return None
