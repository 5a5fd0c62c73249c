"""Seal patient details to the parties of a referral, open them, and re-seal them to a clinic that joins.

HPKE (RFC 9180; ``cryptography``'s X25519, HKDF-SHA256, ChaCha20-Poly1305 suite) seals one
copy per clinic, its ``info`` binding the referral, the carrying message, the sealing clinic,
the recipient and the recipient's key id: a copy moved into another referral, message or
mailbox does not open. HPKE's base mode does not say who sealed, so the sealing clinic signs
the whole :class:`SealedDetails` with its Ed25519 key (docs/decisions/0032-sealed-patient-details.md).

Pure: no I/O, no clock; keys come in as arguments, so the hub's services can verify a
seal's signature and shape without ever holding a key that opens one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Final
from uuid import UUID

import msgspec
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from referral_hub.contracts.patient import (
    PatientDetails,
    SealedCopy,
    SealedDetails,
    SealingKey,
    signed_part,
)
from referral_hub.errors import HubError

SUITE: Final = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
INFO_LABEL: Final = b"referral-hub/patient-details/v1"


class SealingError(HubError):
    """Sealed details that cannot be made, trusted or opened; the message says which and never what is inside."""


class NotSealedToYouError(SealingError):
    """The seal has no copy for this clinic, or none under a key this clinic holds."""


class UntrustedSealError(SealingError):
    """The signature does not verify against the sealing clinic's registered keys: forged, altered or swapped."""


class WrongReferralError(SealingError):
    """The seal names another referral than the one it was found in."""


class UnreadableSealError(SealingError):
    """The copy does not open with this clinic's key, or what it holds is not patient details."""


def key_id_of(encryption: bytes, signing: bytes) -> str:
    """A key pair's id: the first 16 hex digits of SHA-256 over both public halves."""
    return hashlib.sha256(b"referral-hub/sealing-key\x00" + encryption + signing).hexdigest()[:16]


def _raw_public(key: X25519PublicKey | Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class ClinicKeyPair:
    """A clinic's private sealing keys: X25519 to open copies, Ed25519 to sign seals."""

    encryption: X25519PrivateKey
    signing: Ed25519PrivateKey

    @cached_property
    def public(self) -> SealingKey:
        """What the registry publishes for this pair."""
        encryption = _raw_public(self.encryption.public_key())
        signing = _raw_public(self.signing.public_key())
        return SealingKey(key_id=key_id_of(encryption, signing), encryption=encryption, signing=signing)

    @property
    def key_id(self) -> str:
        """The pair's id, as the registry and each copy name it."""
        return self.public.key_id

    def private_bytes(self) -> tuple[bytes, bytes]:
        """The two raw 32-byte private keys, for the key store's 0600 file only."""
        return (
            self.encryption.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()),
            self.signing.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()),
        )

    @classmethod
    def from_private_bytes(cls, encryption: bytes, signing: bytes) -> ClinicKeyPair:
        """The pair back from :meth:`private_bytes`."""
        return cls(X25519PrivateKey.from_private_bytes(encryption), Ed25519PrivateKey.from_private_bytes(signing))


def generate() -> ClinicKeyPair:
    """A fresh key pair from the operating system's random source."""
    return ClinicKeyPair(X25519PrivateKey.generate(), Ed25519PrivateKey.generate())


def _info(referral_id: UUID, message_id: UUID, sealed_by: str, clinic: str, key_id: str) -> bytes:
    fields = (str(referral_id), str(message_id), sealed_by, clinic, key_id)
    return b"\x00".join((INFO_LABEL, *(field.encode() for field in fields)))


@dataclass(frozen=True)
class Binding:
    """What a seal is bound to: the referral, the message that carries it, and the clinic that seals it."""

    referral_id: UUID
    message_id: UUID
    sealed_by: str


def seal(
    details: PatientDetails, binding: Binding, sender: ClinicKeyPair, recipients: Mapping[str, SealingKey]
) -> SealedDetails:
    """``details`` sealed to each clinic in ``recipients`` (clinic id to current public key), signed by ``sender``."""
    referral_id, message_id, sealed_by = binding.referral_id, binding.message_id, binding.sealed_by
    plaintext = msgspec.json.encode(details)
    copies = tuple(
        SealedCopy(
            clinic=clinic,
            key_id=key.key_id,
            blob=SUITE.encrypt(
                plaintext,
                X25519PublicKey.from_public_bytes(key.encryption),
                info=_info(referral_id, message_id, sealed_by, clinic, key.key_id),
            ),
        )
        for clinic, key in sorted(recipients.items())
    )
    unsigned = SealedDetails(
        referral_id=referral_id,
        message_id=message_id,
        sealed_by=sealed_by,
        signer_key_id=sender.key_id,
        copies=copies,
        signature=bytes(64),
    )
    return msgspec.structs.replace(unsigned, signature=sender.signing.sign(signed_part(unsigned)))


def verify(sealed: SealedDetails, signer_keys: Iterable[SealingKey]) -> None:
    """Raise :class:`UntrustedSealError` unless the sealing clinic's key ``signer_key_id`` signed ``sealed``.

    ``signer_keys`` are the sealing clinic's registered keys, retired ones included, so a seal
    made before a rotation still verifies.
    """
    key = next((key for key in signer_keys if key.key_id == sealed.signer_key_id), None)
    if key is None:
        msg = f"the details are signed with a key {sealed.sealed_by!r} never registered"
        raise UntrustedSealError(msg)
    try:
        Ed25519PublicKey.from_public_bytes(key.signing).verify(sealed.signature, signed_part(sealed))
    except InvalidSignature as exc:
        msg = f"the details' signature does not verify against {sealed.sealed_by!r}'s key: altered or forged"
        raise UntrustedSealError(msg) from exc


def open_sealed(
    sealed: SealedDetails,
    *,
    referral_id: UUID,
    clinic: str,
    keys: Mapping[str, ClinicKeyPair],
    signer_keys: Iterable[SealingKey],
) -> PatientDetails:
    """The details in ``clinic``'s copy, after checking the referral and the sealing clinic's signature.

    ``keys`` are the clinic's private pairs by key id (old ones included: a copy sealed before
    a rotation opens with the key it was sealed to).
    """
    if sealed.referral_id != referral_id:
        msg = f"the details were sealed for referral {sealed.referral_id}, not {referral_id}"
        raise WrongReferralError(msg)
    verify(sealed, signer_keys)
    copy = sealed.copy_for(clinic)
    if copy is None:
        msg = f"the details are not sealed to {clinic!r}"
        raise NotSealedToYouError(msg)
    pair = keys.get(copy.key_id)
    if pair is None:
        msg = f"the details are sealed to {clinic!r}'s key {copy.key_id}, which this key store does not hold"
        raise NotSealedToYouError(msg)
    try:
        plaintext = SUITE.decrypt(
            copy.blob,
            pair.encryption,
            info=_info(sealed.referral_id, sealed.message_id, sealed.sealed_by, clinic, copy.key_id),
        )
        return msgspec.json.decode(plaintext, type=PatientDetails)
    except (InvalidTag, ValueError, msgspec.DecodeError) as exc:
        msg = f"{clinic!r}'s copy of the details does not open: it was sealed for another referral, message or key"
        raise UnreadableSealError(msg) from exc
