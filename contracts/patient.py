"""Who the patient is, and the sealed form in which that crosses the hub.

:class:`PatientDetails` is the person as the referring clinic's front desk typed them in.
It never travels in clear: a clinic seals it to each party of the referral
(:class:`SealedDetails`, one :class:`SealedCopy` per clinic) and the hub routes, stores and
audits only the sealed form. The hub checks who sealed it, for which referral and message,
and to whom (the fields outside the copies); it cannot read a name.

:func:`details_problems` says, in words a receptionist understands, why typed-in details
cannot be sent (a birth date in the future, a phone number no network could dial).
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping
from datetime import date
from typing import Annotated, Final
from uuid import UUID

import msgspec

from referral_hub.contracts.base import PHI, ClinicId, ContractError

DETAILS_VERSION: Final = 1
"""The version of :class:`PatientDetails` this code writes and the newest it reads."""
MAX_AGE_YEARS: Final = 130
PHONE_DIGITS: Final = (7, 15)
"""E.164: at most 15 digits with the country code; no dialable number has fewer than 7."""
MAX_COPIES: Final = 8
MAX_COPY_BYTES: Final = 4096
"""A copy is the HPKE encapsulated key (32 bytes) and the sealed JSON details (well under 2 KiB)."""

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100), PHI]
KeyId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{16}\Z", description="Fingerprint of a sealing key.")]


class DetailsError(ContractError):
    """Typed-in patient details that cannot be sent; ``problems`` maps each field to words for the person typing."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        """Keep the problems by field, and say them all in the message."""
        self.problems = dict(problems)
        super().__init__("; ".join(self.problems.values()))


class AdministrativeGender(enum.StrEnum):
    """FHIR ``administrative-gender``: what the record says, for administration only."""

    FEMALE = "female"
    MALE = "male"
    OTHER = "other"
    UNKNOWN = "unknown"


class ContactMethod(enum.StrEnum):
    """How the patient prefers to be reached to book a visit."""

    PHONE = "phone"
    SMS = "sms"
    EMAIL = "email"
    MAIL = "mail"


class PostalAddress(msgspec.Struct, frozen=True, kw_only=True):
    """A postal address, in FHIR ``Address`` terms."""

    lines: Annotated[tuple[Annotated[str, msgspec.Meta(max_length=200)], ...], PHI] = ()
    city: Annotated[str, msgspec.Meta(max_length=100), PHI] = ""
    district: Annotated[str, msgspec.Meta(max_length=100), PHI] = ""
    postal_code: Annotated[str, msgspec.Meta(max_length=20), PHI] = ""
    country: Annotated[str, msgspec.Meta(max_length=100)] = ""


class PatientDetails(msgspec.Struct, frozen=True, kw_only=True):
    """The person a referral is about, as the referring clinic knows them. PHI throughout; only ever sealed."""

    version: int = DETAILS_VERSION
    given: Name
    """Given names, space separated, as the patient writes them."""
    family: Name
    birth_date: Annotated[date, PHI]
    gender: AdministrativeGender = AdministrativeGender.UNKNOWN
    phones: Annotated[tuple[Annotated[str, msgspec.Meta(max_length=40)], ...], PHI] = ()
    email: Annotated[str, msgspec.Meta(max_length=254), PHI] = ""
    address: PostalAddress | None = None
    preferred_language: Annotated[str, msgspec.Meta(pattern=r"^\Z|^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*\Z")] = ""
    """A BCP 47 tag such as ``en`` or ``es-MX``."""
    preferred_contact: ContactMethod | None = None
    record_number: Annotated[str, msgspec.Meta(max_length=64), PHI] = ""
    """The referring clinic's own record number for the patient (its MRN)."""

    @property
    def display_name(self) -> str:
        """Given then family name, as a page or a terminal shows it."""
        return f"{self.given} {self.family}"


_EMAIL: Final = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
_PHONE_CHARS: Final = re.compile(r"^\+?[0-9 ().\-]+$")


def phone_problem(number: str) -> str | None:
    """Why ``number`` cannot be dialled, or ``None``: E.164 allows 7 to 15 digits, ``+`` only first."""
    if not _PHONE_CHARS.match(number):
        return f"The phone number {number!r} may hold only digits, spaces, brackets, dots, dashes and a leading +."
    digits = sum(char.isdigit() for char in number)
    low, high = PHONE_DIGITS
    if not low <= digits <= high:
        return f"The phone number {number!r} has {digits} digits; a phone number has {low} to {high}."
    return None


def details_problems(details: PatientDetails, today: date) -> dict[str, str]:
    """Everything a receptionist must fix before ``details`` can be sent, by field (empty: nothing)."""
    problems: dict[str, str] = {}
    if not details.given.strip():
        problems["given"] = "Enter the patient's given name."
    if not details.family.strip():
        problems["family"] = "Enter the patient's family name."
    if details.birth_date > today:
        problems["birth_date"] = f"The birth date {details.birth_date.isoformat()} is in the future."
    elif today.year - details.birth_date.year > MAX_AGE_YEARS:
        problems["birth_date"] = (
            f"The birth date {details.birth_date.isoformat()} is more than {MAX_AGE_YEARS} years ago."
        )
    for number in details.phones:
        if (problem := phone_problem(number)) is not None:
            problems["phone"] = problem
            break
    if details.email and not _EMAIL.match(details.email):
        problems["email"] = f"The e-mail address {details.email!r} is not an address (name@example.org)."
    if details.version > DETAILS_VERSION:
        problems["version"] = f"Patient details version {details.version} is newer than this hub reads."
    return problems


def details_from_fields(fields: Mapping[str, str], today: date) -> PatientDetails:
    """Patient details from a form's or a command line's text fields; :class:`DetailsError` names each problem.

    Fields: ``given``, ``family``, ``birth_date`` (YYYY-MM-DD), ``gender``, ``phone`` (one or more,
    comma separated), ``email``, ``address_line``, ``city``, ``postal_code``, ``country``,
    ``language``, ``contact``, ``record_number``. Empty optional fields are left out.
    """
    text = {name: value.strip() for name, value in fields.items()}
    problems: dict[str, str] = {}
    birth: date | None = None
    try:
        birth = date.fromisoformat(text.get("birth_date", ""))
    except ValueError:
        problems["birth_date"] = "Enter the birth date as year-month-day, for example 1984-03-07."
    phones = tuple(number.strip() for number in text.get("phone", "").split(",") if number.strip())
    address = None
    if any(text.get(name) for name in ("address_line", "city", "postal_code", "country")):
        address = PostalAddress(
            lines=(text["address_line"],) if text.get("address_line") else (),
            city=text.get("city", ""),
            postal_code=text.get("postal_code", ""),
            country=text.get("country", ""),
        )
    raw = {
        "given": text.get("given", ""),
        "family": text.get("family", ""),
        "birth_date": (birth or date.min).isoformat(),
        "gender": text.get("gender") or AdministrativeGender.UNKNOWN.value,
        "phones": phones,
        "email": text.get("email", ""),
        "address": address,
        "preferred_language": text.get("language", ""),
        "preferred_contact": text.get("contact") or None,
        "record_number": text.get("record_number", ""),
    }
    try:
        details = msgspec.convert(raw, PatientDetails, from_attributes=True)
    except msgspec.ValidationError as exc:
        field = _field_of(str(exc))
        problems.setdefault(field, _shape_words(field))
        raise DetailsError(problems) from exc
    problems |= {name: words for name, words in details_problems(details, today).items() if name not in problems}
    if problems:
        raise DetailsError(problems)
    return details


_SHAPE_WORDS: Final = {
    "given": "Enter the patient's given name (at most 100 characters).",
    "family": "Enter the patient's family name (at most 100 characters).",
    "gender": "Choose female, male, other or unknown.",
    "preferred_language": "Enter a language code such as en or es-MX.",
    "language": "Enter a language code such as en or es-MX.",
    "preferred_contact": "Choose phone, sms, e-mail or mail.",
    "contact": "Choose phone, sms, e-mail or mail.",
}
_FIELD_NAMES: Final = {"preferred_language": "language", "preferred_contact": "contact", "phones": "phone"}


def _field_of(message: str) -> str:
    found = re.search(r"`\$\.([a-z_]+)", message)
    name = found.group(1) if found else "details"
    return _FIELD_NAMES.get(name, name)


def _shape_words(field: str) -> str:
    return _SHAPE_WORDS.get(field, f"The {field.replace('_', ' ')} is not valid.")


# --- The sealed form --------------------------------------------------------------------------


class SealingKey(msgspec.Struct, frozen=True, kw_only=True):
    """A clinic's public sealing key as the registry publishes it: X25519 to seal to, Ed25519 to verify."""

    key_id: KeyId
    encryption: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
    signing: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]


class SealedCopy(msgspec.Struct, frozen=True, kw_only=True):
    """The details sealed to one clinic's key: only the holder of ``key_id``'s private half opens it."""

    clinic: ClinicId
    key_id: KeyId
    blob: Annotated[bytes, msgspec.Meta(min_length=48, max_length=MAX_COPY_BYTES)]


class SealedDetails(msgspec.Struct, frozen=True, kw_only=True):
    """Patient details sealed to the parties of one referral, bound to it and to the message that carries it.

    ``signature`` is the sealing clinic's Ed25519 signature over everything else, so nobody
    (the hub included) can swap, add or drop a copy unnoticed; each copy's HPKE ``info``
    binds the referral, the message and the recipient, so a copy moved anywhere else does
    not open.
    """

    version: int = DETAILS_VERSION
    referral_id: UUID
    message_id: UUID
    sealed_by: ClinicId
    signer_key_id: KeyId
    copies: Annotated[tuple[SealedCopy, ...], msgspec.Meta(min_length=1, max_length=MAX_COPIES)]
    signature: Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]

    def copy_for(self, clinic: str) -> SealedCopy | None:
        """The copy sealed to ``clinic``, if there is one."""
        return next((copy for copy in self.copies if copy.clinic == clinic), None)

    @property
    def digest(self) -> str:
        """SHA-256 of the sealed form: what services log and compare instead of the details."""
        return hashlib.sha256(msgspec.json.encode(self)).hexdigest()

    @property
    def holders(self) -> frozenset[str]:
        """The clinics this seal has a copy for."""
        return frozenset(copy.clinic for copy in self.copies)


def signed_part(sealed: SealedDetails) -> bytes:
    """The bytes the sealing clinic signs: everything but the signature, in a fixed order."""
    body = (
        "referral-hub/sealed-details",
        sealed.version,
        str(sealed.referral_id),
        str(sealed.message_id),
        sealed.sealed_by,
        sealed.signer_key_id,
        [(copy.clinic, copy.key_id, copy.blob) for copy in sealed.copies],
    )
    return msgspec.json.encode(body)
