"""Sealing patient details to a referral's parties: bound, signed, opened only by a holder, checked by the hub blind."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from uuid import UUID

import msgspec
import pytest

from referral_hub.cli import sealing_keys as sealing_cli
from referral_hub.client import new_id
from referral_hub.contracts.patient import PatientDetails, SealedDetails, signed_part
from referral_hub.contracts.registry import Clinic
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.referrals import domain
from referral_hub.referrals.sealed_checks import check_sealed
from referral_hub.runtime.jetstream.registry_cache import load_registry_file
from referral_hub.runtime.messaging.refusals import Refusal
from referral_hub.sealing import core, parties
from referral_hub.sealing.keystore import KeyStore

from .helpers import referral_request

PERSON = PatientDetails(given="Testa", family="Fakenham", birth_date=date(1984, 3, 7), phones=("+1 555 0100 123",))
SENDER, RECIPIENT, OUTSIDER = "harbor-pt", "lotus-acu", "summit-chiro"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    keys = KeyStore(tmp_path_factory.mktemp("sealing-keys"))
    for clinic in (SENDER, RECIPIENT, OUTSIDER, "riverside-wellness"):
        keys.generate(clinic)
    return keys


@pytest.fixture(scope="module")
def registry(store: KeyStore) -> dict[str, Clinic]:
    return {
        clinic.id: msgspec.structs.replace(clinic, sealing_keys=(store.current(clinic.id).public,))
        if store.holds(clinic.id)
        else clinic
        for clinic in load_registry_file().clinics
    }


def sealed(store: KeyStore, registry: dict[str, Clinic], referral_id: UUID, message_id: UUID) -> SealedDetails:
    return parties.seal_to(
        store,
        registry,
        PERSON,
        referral_id=referral_id,
        message_id=message_id,
        sealer=SENDER,
        holders=(SENDER, RECIPIENT),
    )


def test_each_party_opens_its_own_copy(store: KeyStore, registry: dict[str, Clinic]) -> None:
    referral_id = new_id()
    seal = sealed(store, registry, referral_id, new_id())
    assert [parties.read(store, registry, seal, referral_id, clinic) for clinic in (SENDER, RECIPIENT)] == [PERSON] * 2


def test_a_clinic_without_a_copy_cannot_open(store: KeyStore, registry: dict[str, Clinic]) -> None:
    referral_id = new_id()
    with pytest.raises(core.NotSealedToYouError):
        parties.read(store, registry, sealed(store, registry, referral_id, new_id()), referral_id, OUTSIDER)


def test_a_seal_found_in_another_referral_is_refused(store: KeyStore, registry: dict[str, Clinic]) -> None:
    seal = sealed(store, registry, new_id(), new_id())
    with pytest.raises(core.WrongReferralError):
        parties.read(store, registry, seal, new_id(), RECIPIENT)


def test_a_seal_relabelled_to_another_referral_fails_its_signature(
    store: KeyStore, registry: dict[str, Clinic]
) -> None:
    other = new_id()
    relabelled = msgspec.structs.replace(sealed(store, registry, new_id(), new_id()), referral_id=other)
    with pytest.raises(core.UntrustedSealError):
        parties.read(store, registry, relabelled, other, RECIPIENT)


def test_a_copy_moved_into_a_seal_signed_for_another_referral_does_not_open(
    store: KeyStore, registry: dict[str, Clinic]
) -> None:
    """A copy lifted from referral A, re-signed by its own sealer into referral B, does not open: HPKE info differs."""
    lifted = sealed(store, registry, new_id(), new_id()).copies
    target = new_id()
    forged = msgspec.structs.replace(sealed(store, registry, target, new_id()), copies=lifted)
    forged = msgspec.structs.replace(forged, signature=store.current(SENDER).signing.sign(signed_part(forged)))
    with pytest.raises(core.UnreadableSealError):
        parties.read(store, registry, forged, target, RECIPIENT)


def test_a_rotated_key_keeps_old_details_readable_and_seals_new_ones_to_itself(
    tmp_path: Path, store: KeyStore, registry: dict[str, Clinic]
) -> None:
    referral_id = new_id()
    before = sealed(store, registry, referral_id, new_id())
    rotating = KeyStore(tmp_path)
    for clinic in (SENDER, RECIPIENT):
        for pair in store.keys(clinic).values():
            rotating.add(clinic, pair)
    new_key = rotating.generate(RECIPIENT).public
    rotated = registry | {RECIPIENT: msgspec.structs.replace(registry[RECIPIENT], sealing_keys=(new_key,))}
    after = parties.seal_to(
        rotating, rotated, PERSON, referral_id=referral_id, message_id=new_id(), sealer=SENDER, holders=(RECIPIENT,)
    )
    assert after.copies[0].key_id == new_key.key_id != before.copy_for(RECIPIENT).key_id  # type: ignore[union-attr]
    assert parties.read(rotating, rotated, before, referral_id, RECIPIENT) == PERSON
    assert parties.read(rotating, rotated, after, referral_id, RECIPIENT) == PERSON


def test_a_party_reseals_to_a_clinic_that_joins(store: KeyStore, registry: dict[str, Clinic]) -> None:
    referral_id = new_id()
    joined = parties.reseal(
        store,
        registry,
        sealed(store, registry, referral_id, new_id()),
        reader=RECIPIENT,
        message_id=new_id(),
        to_clinic="riverside-wellness",
    )
    assert joined.holders == {"riverside-wellness"}
    assert parties.read(store, registry, joined, referral_id, "riverside-wellness") == PERSON


def test_a_clinic_never_party_cannot_reseal(store: KeyStore, registry: dict[str, Clinic]) -> None:
    with pytest.raises(core.NotSealedToYouError):
        parties.reseal(
            store,
            registry,
            sealed(store, registry, new_id(), new_id()),
            reader=OUTSIDER,
            message_id=new_id(),
            to_clinic=OUTSIDER,
        )


def test_a_truncated_blob_is_a_typed_error(store: KeyStore, registry: dict[str, Clinic]) -> None:
    referral_id = new_id()
    seal = sealed(store, registry, referral_id, new_id())
    broken = tuple(msgspec.structs.replace(c, blob=c.blob[:60]) for c in seal.copies)
    resigned = msgspec.structs.replace(seal, copies=broken)
    resigned = msgspec.structs.replace(resigned, signature=store.current(SENDER).signing.sign(signed_part(resigned)))
    with pytest.raises(core.UnreadableSealError):
        parties.read(store, registry, resigned, referral_id, RECIPIENT)


def test_an_oversized_blob_does_not_decode() -> None:
    copy = {"clinic": RECIPIENT, "key_id": "0" * 16, "blob": "QUFB" * 2000}
    raw = {"referral_id": str(new_id()), "message_id": str(new_id()), "sealed_by": SENDER, "signer_key_id": "0" * 16}
    body = msgspec.json.encode(raw | {"copies": [copy], "signature": "A" * 88})
    with pytest.raises(msgspec.ValidationError, match="copies"):
        msgspec.json.decode(body, type=SealedDetails)


# --- What the referrals service checks without opening anything --------------------------------


def refusal(store: KeyStore, registry: dict[str, Clinic], **tamper: object) -> Refusal | None:
    request = referral_request(SENDER, RECIPIENT)
    seal = sealed(store, registry, request.referral_id, request.message_id)
    request = msgspec.structs.replace(request, patient_details=msgspec.structs.replace(seal, **tamper))
    return check_sealed(request, request.patient_details, (SENDER, RECIPIENT), registry.get)


def test_the_hub_passes_a_seal_bound_to_its_request(store: KeyStore, registry: dict[str, Clinic]) -> None:
    assert refusal(store, registry) is None


def test_the_hub_refuses_a_seal_from_another_referral(store: KeyStore, registry: dict[str, Clinic]) -> None:
    found = refusal(store, registry, referral_id=new_id())
    assert found is not None
    assert found.code is RejectionCode.SEALED_DETAILS_MISMATCH


def test_the_hub_refuses_a_seal_whose_signature_was_broken(store: KeyStore, registry: dict[str, Clinic]) -> None:
    found = refusal(store, registry, signature=bytes(64))
    assert found is not None
    assert "signature" in found.reason


def test_the_hub_refuses_details_sealed_to_the_wrong_clinic(store: KeyStore, registry: dict[str, Clinic]) -> None:
    request = referral_request(SENDER, RECIPIENT)
    wrong = parties.seal_to(
        store,
        registry,
        PERSON,
        referral_id=request.referral_id,
        message_id=request.message_id,
        sealer=SENDER,
        holders=(SENDER, OUTSIDER),
    )
    decision = domain.decide(
        msgspec.structs.replace(request, patient_details=wrong),
        None,
        registry.get,
        request.occurred_at,
        domain.SlaPolicy(),
    )
    assert isinstance(decision, Refusal)
    assert decision.code is RejectionCode.SEALED_DETAILS_MISMATCH


def test_the_hub_refuses_a_copy_sealed_to_a_retired_key(store: KeyStore, registry: dict[str, Clinic]) -> None:
    rotated = registry | {
        RECIPIENT: msgspec.structs.replace(
            registry[RECIPIENT], sealing_keys=(*registry[RECIPIENT].sealing_keys, core.generate().public)
        )
    }
    request = referral_request(SENDER, RECIPIENT)
    seal = sealed(store, registry, request.referral_id, request.message_id)
    found = check_sealed(request, seal, (SENDER, RECIPIENT), rotated.get)
    assert found is not None
    assert "current registered key" in found.reason


def test_the_recipient_event_carries_the_seal(store: KeyStore, registry: dict[str, Clinic]) -> None:
    request = referral_request(SENDER, RECIPIENT)
    request = msgspec.structs.replace(
        request, patient_details=sealed(store, registry, request.referral_id, request.message_id)
    )
    decision = domain.decide(request, None, registry.get, request.occurred_at, domain.SlaPolicy())
    assert isinstance(decision, domain.Changed)
    event = domain.announcements(decision.referral, decision.step)[0].event
    assert getattr(event, "patient_details", None) == request.patient_details


# --- Registering and rotating keys ---------------------------------------------------------------


def test_a_hosted_clinic_without_a_key_gets_one_made_and_registered(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path)
    clinic = load_registry_file().clinics[0]
    registered = sealing_cli.ensure_key(clinic, keys)
    assert registered.sealing_key == keys.current(clinic.id).public


def test_rotating_keeps_the_old_public_key_to_verify_old_seals(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path)
    clinic = sealing_cli.ensure_key(load_registry_file().clinics[0], keys)
    old = clinic.sealing_key
    rotated = sealing_cli.with_key(clinic, keys.generate(clinic.id).public)
    assert rotated.sealing_keys[0] == old
    assert rotated.sealing_key == keys.current(clinic.id).public != old
    assert set(keys.keys(clinic.id)) == {key.key_id for key in rotated.sealing_keys}


def test_private_key_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "sealing-keys")
    pair = keys.generate("harbor-pt")
    assert (tmp_path / "sealing-keys" / "harbor-pt" / f"{pair.key_id}.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "sealing-keys").stat().st_mode & 0o777 == 0o700
