"""The leak finder itself finds what it must: otherwise a clean data folder would prove nothing."""

from __future__ import annotations

import base64
import json
from datetime import date

import msgspec

from referral_hub.contracts.patient import PatientDetails

from .patient_leaks import leaks

PERSON = PatientDetails(given="Quenby", family="Zarkovitch", birth_date=date(1931, 7, 19), phones=("+1 555 0142 8867",))


def test_a_plain_name_is_found() -> None:
    assert leaks([("log", b'{"event": "sent", "who": "Quenby Zarkovitch"}')], PERSON)


def test_a_json_escaped_name_is_found() -> None:
    escaped = PatientDetails(given="Zoë", family="O'Quenby", birth_date=PERSON.birth_date)
    assert leaks([("json", json.dumps({"name": "Zoë"}).encode())], escaped)


def test_a_name_inside_base64_is_found_at_every_alignment() -> None:
    for prefix in (b"", b"a", b"ab"):
        blob = base64.b64encode(prefix + b'{"family": "Zarkovitch", "x": 1}')
        assert leaks([("b64", blob)], PERSON), prefix


def test_the_plaintext_details_in_base64_are_found() -> None:
    assert leaks([("blob", base64.b64encode(msgspec.json.encode(PERSON)))], PERSON)


def test_a_phone_number_without_spaces_is_found() -> None:
    assert leaks([("csv", b"id,phone\n1,+155501428867\n")], PERSON)


def test_unrelated_bytes_are_clean() -> None:
    assert not leaks([("noise", b"referral pt-0001 sealed " + base64.b64encode(bytes(range(256))))], PERSON)
