"""A clinic agent's side of sealing: seal a new referral's details, re-seal them to a clinic that joins, read them.

The agent (``hubctl``, the hosted portal, the FHIR gateway) holds the clinic's private keys
in its :class:`~referral_hub.sealing.keystore.KeyStore` and looks the other clinics' public
keys up in the registry; nothing here talks to NATS.
"""

from __future__ import annotations

from collections.abc import Mapping
from uuid import UUID

from referral_hub.contracts.patient import PatientDetails, SealedDetails, SealingKey
from referral_hub.contracts.registry import Clinic
from referral_hub.sealing.core import Binding, SealingError, open_sealed, seal
from referral_hub.sealing.keystore import KeyStore


class NoSealingKeyError(SealingError):
    """A clinic the details must be sealed to has registered no sealing key."""


def _public_key(registry: Mapping[str, Clinic], clinic: str) -> SealingKey:
    record = registry.get(clinic)
    key = record.sealing_key if record is not None else None
    if key is None:
        msg = f"{clinic!r} has registered no sealing key (an operator adds one: hubctl sealing-key add --clinic X)"
        raise NoSealingKeyError(msg)
    return key


def seal_to(  # noqa: PLR0913 - the details, where they are bound, who seals, to whom, with which keys
    store: KeyStore,
    registry: Mapping[str, Clinic],
    details: PatientDetails,
    *,
    referral_id: UUID,
    message_id: UUID,
    sealer: str,
    holders: tuple[str, ...],
) -> SealedDetails:
    """``details`` sealed by ``sealer`` (its current key in ``store``) to each of ``holders``' current keys."""
    recipients = {clinic: _public_key(registry, clinic) for clinic in holders}
    return seal(details, Binding(referral_id, message_id, sealer), store.current(sealer), recipients)


def read(
    store: KeyStore, registry: Mapping[str, Clinic], sealed: SealedDetails, referral_id: UUID, clinic: str
) -> PatientDetails:
    """``clinic``'s copy of ``sealed`` opened with the keys ``store`` holds for it, its signature checked."""
    signer = registry.get(sealed.sealed_by)
    return open_sealed(
        sealed,
        referral_id=referral_id,
        clinic=clinic,
        keys=store.keys(clinic),
        signer_keys=signer.sealing_keys if signer is not None else (),
    )


def reseal(  # noqa: PLR0913 - what to re-seal, who reads and re-seals it, where, to whom
    store: KeyStore,
    registry: Mapping[str, Clinic],
    sealed: SealedDetails,
    *,
    reader: str,
    message_id: UUID,
    to_clinic: str,
) -> SealedDetails:
    """The details ``reader`` can open in ``sealed``, sealed again by ``reader`` to ``to_clinic`` for ``message_id``.

    Only a clinic holding a copy can do this: a clinic that was never a party has nothing
    to open, and :class:`~referral_hub.sealing.core.NotSealedToYouError` says so.
    """
    details = read(store, registry, sealed, sealed.referral_id, reader)
    return seal_to(
        store,
        registry,
        details,
        referral_id=sealed.referral_id,
        message_id=message_id,
        sealer=reader,
        holders=(to_clinic,),
    )
