"""Linkage keys, made at the clinic from a person's details and the network's linkage secret.

Two encodings, both keyed so that only holders of the secret can make or test them:

* **Tokens**: HMAC-SHA256 over normalised field combinations (names and birth date; phonetic
  names and birth date; swapped names; one name with birth date and postcode; ...). Two records
  that share a token are candidates; the set of shared tokens is evidence. A token is made only
  when all of its fields are present, so a missing field never makes a false agreement.
* **Field filters**: one Bloom filter per field (Schnell, Bachteler and Reiher), into which
  the field's bigrams are hashed with keyed double hashing. Their Dice similarity tolerates
  typos, which exact tokens cannot, and field by field it lets the hub weigh agreement the
  way a Fellegi-Sunter matcher does on plaintext (docs/linkage.md).

Normalisation is deliberately simple and the same everywhere: accents folded, case folded,
letters only for names, digits only for phones. Phonetic codes come from ``jellyfish`` (a
maintained Rust implementation of NYSIIS and Soundex) rather than a hand-written copy.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Final

import jellyfish
import msgspec

SCHEME_VERSION: Final = 1
"""Changing normalisation, token recipes or filter parameters is a new scheme: keys of different
versions never compare, so a network re-keys every patient when it moves."""

MIN_SECRET_BYTES: Final = 32


class LinkageError(Exception):
    """Base of every error raised by the linkage package."""


class Person(msgspec.Struct, frozen=True, kw_only=True):
    """The fields linkage reads; every one may be missing (``""``)."""

    given_name: str = ""
    family_name: str = ""
    birth_date: str = ""
    """``YYYY-MM-DD`` or ``YYYYMMDD``."""
    sex: str = ""
    postcode: str = ""
    address: str = ""
    phone: str = ""


RecipeName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z-]{0,31}\Z")]
TokenDigest = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}\Z")]
FieldFilter = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}\Z")]


class LinkageKeys(msgspec.Struct, frozen=True, kw_only=True):
    """What a clinic sends the hub about one patient: keyed digests only, never a field.

    Bounded in every dimension, so a decoded set of keys costs the hub a known amount of
    memory and lookup time whoever sent it.
    """

    scheme: Annotated[int, msgspec.Meta(ge=1, le=1000)] = SCHEME_VERSION
    key_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{0,64}\Z")] = ""
    """Which generation of the network secret made these keys (rotation re-keys)."""
    tokens: Annotated[dict[RecipeName, TokenDigest], msgspec.Meta(max_length=32)] = {}
    """Recipe name to truncated keyed digest (hex)."""
    fields: Annotated[dict[RecipeName, FieldFilter], msgspec.Meta(max_length=16)] = {}
    """One keyed Bloom filter per field (hex), for field-by-field similarity at the hub."""


@dataclass(frozen=True, slots=True)
class Normalised:
    """A person's fields after normalisation; ``None`` where missing or unusable."""

    given: str | None
    family: str | None
    birth: date | None
    sex: str | None
    postcode: str | None
    address: tuple[str, ...]
    phone: str | None


def _letters(value: str) -> str | None:
    folded = unicodedata.normalize("NFKD", value.casefold())
    letters = "".join(ch for ch in folded if "a" <= ch <= "z")
    return letters or None


def _birth(value: str) -> date | None:
    digits = "".join(ch for ch in value if ch.isdigit())
    if len(digits) != 8:  # noqa: PLR2004 - YYYYMMDD
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None


def _sex(value: str) -> str | None:
    first = value.strip()[:1].casefold()
    return first if first in {"m", "f"} else None


def _postcode(value: str) -> str | None:
    code = "".join(ch for ch in value.upper() if ch.isalnum())
    return code or None


def _phone(value: str) -> str | None:
    digits = "".join(ch for ch in value if ch.isdigit())
    return digits[-9:] if len(digits) >= 7 else None  # noqa: PLR2004 - shorter is no phone number


def _address(value: str) -> tuple[str, ...]:
    folded = unicodedata.normalize("NFKD", value.casefold())
    words = "".join(ch if ch.isalnum() else " " for ch in folded if ch.isascii()).split()
    return tuple(words)


def normalise(person: Person) -> Normalised:
    """The single normalisation every clinic applies before keying."""
    return Normalised(
        given=_letters(person.given_name),
        family=_letters(person.family_name),
        birth=_birth(person.birth_date),
        sex=_sex(person.sex),
        postcode=_postcode(person.postcode),
        address=_address(person.address),
        phone=_phone(person.phone),
    )


def _recipes(n: Normalised) -> dict[str, tuple[str | None, ...]]:
    """Each token's fields; a token is made only when none is ``None``."""
    dob = n.birth.isoformat() if n.birth else None
    yob = str(n.birth.year) if n.birth else None
    given_code = jellyfish.nysiis(n.given) if n.given else None
    family_code = jellyfish.nysiis(n.family) if n.family else None
    swapped = "|".join(sorted((n.given, n.family))) if n.given and n.family else None
    return {
        "name-dob": (n.family, n.given, dob),
        "phonetic-dob": (family_code, given_code, dob),
        "sorted-names-dob": (swapped, dob),
        "family-dob-postcode": (n.family, dob, n.postcode),
        "given-dob-postcode": (n.given, dob, n.postcode),
        "names-yob-postcode": (n.family, n.given, yob, n.postcode),
        "initials-dob-postcode": (
            n.family[:1] if n.family else None,
            n.given[:1] if n.given else None,
            dob,
            n.postcode,
        ),
        "phone-given": (n.phone, n.given[:1] if n.given else None),
        "sorted-names": (swapped,),
        "family-dob": (n.family, dob),
        "given-dob": (n.given, dob),
        "dob-postcode": (dob, n.postcode),
        "family-postcode": (n.family, n.postcode),
        "street-postcode": (" ".join(n.address[:2]) or None, n.postcode),
        "street": (" ".join(n.address[:2]) or None,),
        "dob": (dob,),
    }


def _bigrams(value: str) -> list[str]:
    padded = f"_{value}_"
    return [padded[i : i + 2] for i in range(len(padded) - 1)]


def _subkey(secret: bytes, purpose: bytes) -> bytes:
    return hmac.new(secret, b"referral-hub linkage v1 " + purpose, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class LinkageSecret:
    """The network's shared secret, split into one subkey per use; the hub never holds it."""

    key_id: str
    token_key: bytes
    filter_key: bytes

    @classmethod
    def from_bytes(cls, secret: bytes, key_id: str) -> LinkageSecret:
        """Derive the subkeys; refuse a secret too short to resist guessing."""
        if len(secret) < MIN_SECRET_BYTES:
            msg = f"the linkage secret must be at least {MIN_SECRET_BYTES} bytes, got {len(secret)}"
            raise LinkageError(msg)
        return cls(key_id=key_id, token_key=_subkey(secret, b"tokens"), filter_key=_subkey(secret, b"field filters"))


FIELD_BITS: Final = 256


def _field_items(n: Normalised) -> dict[str, list[str]]:
    """Each field's q-grams; a field that is missing has none and gets no filter."""
    birth = n.birth.strftime("%Y%m%d") if n.birth else ""
    return {
        "given": _bigrams(n.given) if n.given else [],
        "family": _bigrams(n.family) if n.family else [],
        "birth": _bigrams(birth) if birth else [],
        "sex": [n.sex] if n.sex else [],
        "postcode": _bigrams(n.postcode) if n.postcode else [],
        "address": _bigrams("".join(n.address)) if n.address else [],
        "phone": _bigrams(n.phone) if n.phone else [],
    }


def _field_filters(n: Normalised, key: bytes) -> dict[str, str]:
    filters = {}
    for name, items in _field_items(n).items():
        bits = 0
        for item in items:
            digest = hmac.new(key, f"{name}:{item}".encode(), hashlib.sha256).digest()
            h1 = int.from_bytes(digest[:8], "big")
            h2 = int.from_bytes(digest[8:16], "big") | 1
            for i in range(FIELD_HASHES):
                bits |= 1 << ((h1 + i * h2) % FIELD_BITS)
        if bits:
            filters[name] = f"{bits:0{FIELD_BITS // 4}x}"
    return filters


FIELD_HASHES: Final = 6


def make_keys(person: Person, secret: LinkageSecret) -> LinkageKeys:
    """The clinic-side step: normalise, then key every recipe whose fields are all present."""
    n = normalise(person)
    tokens = {}
    for name, fields in _recipes(n).items():
        if all(fields):
            message = f"{name}\x1f" + "\x1f".join(f for f in fields if f)
            tokens[name] = hmac.new(secret.token_key, message.encode(), hashlib.sha256).hexdigest()[:32]
    return LinkageKeys(
        key_id=secret.key_id,
        tokens=tokens,
        fields=_field_filters(n, secret.filter_key),
    )
