"""What the hub checks on sealed patient details it cannot open. Pure.

The hub never holds a key that opens a copy, but it can refuse a seal that could not be
right: bound to another referral or message, claiming another sealer, signed with a key the
sealer never registered (or not verifying), or not sealed to exactly the clinics that must
read it under their current registered keys. A refusal is typed
(``sealed_details_mismatch``) and says what is wrong with the seal, never anything inside it.
"""

from __future__ import annotations

from collections.abc import Collection

from referral_hub.contracts.patient import SealedDetails
from referral_hub.contracts.referrals import ReferralCommand
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.runtime.messaging.admission import ClinicLookup
from referral_hub.runtime.messaging.refusals import Refusal
from referral_hub.sealing.core import UntrustedSealError, verify


def _mismatch(reason: str) -> Refusal:
    return Refusal(RejectionCode.SEALED_DETAILS_MISMATCH, reason)


def check_sealed(
    command: ReferralCommand, sealed: SealedDetails | None, holders: Collection[str], lookup: ClinicLookup
) -> Refusal | None:
    """Why the hub refuses ``sealed`` on ``command``, or ``None``; ``holders`` are the clinics it must be sealed to."""
    if sealed is None:
        return None
    if sealed.referral_id != command.referral_id or sealed.message_id != command.message_id:
        return _mismatch("the sealed patient details are bound to another referral or message")
    if sealed.sealed_by != command.sender_clinic:
        return _mismatch("the sealed patient details must be sealed by the clinic that sends them")
    if sealed.holders != frozenset(holders) or len(sealed.copies) != len(holders):
        return _mismatch(f"the patient details must be sealed once to each of: {', '.join(sorted(holders))}")
    return _check_keys(command, sealed, lookup)


def _check_keys(command: ReferralCommand, sealed: SealedDetails, lookup: ClinicLookup) -> Refusal | None:
    for copy in sealed.copies:
        holder = lookup(copy.clinic)
        key = holder.sealing_key if holder is not None else None
        if key is None or key.key_id != copy.key_id:
            return _mismatch(f"the copy for {copy.clinic!r} is not sealed to its current registered key")
    sender = lookup(command.sender_clinic)
    try:
        verify(sealed, sender.sealing_keys if sender is not None else ())
    except UntrustedSealError as exc:
        return _mismatch(str(exc))
    return None


def details_for(seals: Collection[SealedDetails | None], clinic: str) -> SealedDetails | None:
    """The newest of ``seals`` with a copy for ``clinic``: what its referral event carries."""
    return next((seal for seal in reversed(list(seals)) if seal is not None and clinic in seal.holders), None)
