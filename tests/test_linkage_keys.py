"""Linkage keys: made at the clinic under the network's secret, and carrying no field in the clear."""

from __future__ import annotations

import base64
import json

import msgspec
import pytest

from referral_hub.linkage.linkage_keys import LinkageError, LinkageKeys, LinkageSecret, Person, make_keys, normalise

SECRET = LinkageSecret.from_bytes(b"network linkage secret, 32 bytes!", "k1")
OTHER_SECRET = LinkageSecret.from_bytes(b"another network's secret, 32 byte", "k1")
ADA = Person(
    given_name="Adélaïde",
    family_name="Quintero-Vasquez",
    birth_date="1984-02-29",
    sex="female",
    postcode="SW1A 1AA",
    address="10 Downing Street",
    phone="+44 20 7946 0958",
)


def test_keys_hold_no_field_in_any_plain_encoding() -> None:
    encoded = msgspec.json.encode(make_keys(ADA, SECRET)).decode().casefold()
    needles = ["adela", "quintero", "vasquez", "1984", "19840229", "sw1a", "downing", "7946", "0958"]
    needles += [base64.b64encode(n.encode()).decode().casefold() for n in ("Quintero-Vasquez", "1984-02-29")]

    assert not [needle for needle in needles if needle in encoded]


def test_the_same_person_written_differently_gets_the_same_tokens() -> None:
    variant = Person(
        given_name="ADELAIDE",
        family_name="quintero vasquez",
        birth_date="19840229",
        sex="F",
        postcode="sw1a1aa",
        address="10 downing street",
        phone="020 7946 0958",
    )

    assert make_keys(variant, SECRET).tokens == make_keys(ADA, SECRET).tokens


def test_another_secret_makes_keys_that_share_nothing() -> None:
    ours, theirs = make_keys(ADA, SECRET), make_keys(ADA, OTHER_SECRET)

    assert not set(ours.tokens.values()) & set(theirs.tokens.values())
    assert ours.fields["family"] != theirs.fields["family"]


def test_a_missing_field_makes_no_token_that_needs_it() -> None:
    keys = make_keys(Person(given_name="Ada", family_name="Lovelace", postcode="N1"), SECRET)

    assert "name-dob" not in keys.tokens
    assert "birth" not in keys.fields
    assert "sorted-names" in keys.tokens


def test_an_impossible_birth_date_counts_as_missing() -> None:
    assert normalise(Person(birth_date="2023-02-30")).birth is None


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(LinkageError, match="at least 32 bytes"):
        LinkageSecret.from_bytes(b"password", "k1")


def test_keys_round_trip_as_json() -> None:
    keys = make_keys(ADA, SECRET)

    assert msgspec.json.decode(msgspec.json.encode(keys), type=type(keys)) == keys
    assert json.loads(msgspec.json.encode(keys))["key_id"] == "k1"


@pytest.mark.parametrize(
    "payload",
    [
        {"tokens": {f"r{n}": "0" * 32 for n in range(33)}},
        {"tokens": {"name-dob": "0" * 32 + "\n"}},
        {"tokens": {"name-dob": "A" * 32}},
        {"fields": {"given": "0" * 65}},
        {"key_id": "k1\n"},
    ],
    ids=["too-many-tokens", "trailing-newline", "not-lowercase-hex", "oversized-filter", "newline-in-key-id"],
)
def test_keys_out_of_bounds_are_refused_at_decoding(payload: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps(payload), type=LinkageKeys)
