"""The patient-details contract: typed, versioned, PHI-marked, and refused in words a receptionist understands."""

from __future__ import annotations

import random
from datetime import date

import msgspec
import pytest

from referral_hub.contracts.patient import (
    DetailsError,
    PatientDetails,
    details_from_fields,
    details_problems,
    phone_problem,
)
from referral_hub.demo.people import demo_person

TODAY = date(2026, 12, 7)
GOOD = {"given": "Testa Synthia", "family": "Fakenham", "birth_date": "1984-03-07", "phone": "+1 555 0100 123"}


def problems_of(**changes: str) -> dict[str, str]:
    with pytest.raises(DetailsError) as caught:
        details_from_fields(GOOD | changes, TODAY)
    return caught.value.problems


def test_typed_in_details_become_the_contract() -> None:
    details = details_from_fields(GOOD | {"email": "t.fakenham@example.org", "gender": "female"}, TODAY)
    assert (details.given, details.family, details.birth_date) == ("Testa Synthia", "Fakenham", date(1984, 3, 7))
    assert (details.phones, details.email, details.version) == (("+1 555 0100 123",), "t.fakenham@example.org", 1)


def test_a_birth_date_in_the_future_is_refused_in_words() -> None:
    assert problems_of(birth_date="2031-02-01") == {"birth_date": "The birth date 2031-02-01 is in the future."}


def test_a_birth_date_that_is_not_a_date_says_how_to_write_one() -> None:
    assert "year-month-day" in problems_of(birth_date="07/03/1984")["birth_date"]


def test_an_impossible_phone_number_is_refused_in_words() -> None:
    assert problems_of(phone="12345")["phone"] == "The phone number '12345' has 5 digits; a phone number has 7 to 15."


def test_a_phone_number_with_letters_is_refused() -> None:
    assert phone_problem("555-CALL-NOW") is not None


def test_an_address_without_a_domain_is_refused() -> None:
    assert "e-mail" in problems_of(email="someone@localhost")["email"]


def test_every_problem_is_named_at_once() -> None:
    assert set(problems_of(birth_date="2031-02-01", phone="1", email="x")) == {"birth_date", "phone", "email"}


def test_an_unknown_gender_is_a_typed_refusal_not_a_crash() -> None:
    assert problems_of(gender="robot") == {"gender": "Choose female, male, other or unknown."}


def test_names_and_contact_fields_are_marked_phi_in_the_schema() -> None:
    schema = msgspec.json.schema(PatientDetails)
    fields = schema["$defs"]["PatientDetails"]["properties"]
    marked = {name for name, spec in fields.items() if spec.get("x-phi")}
    assert {"given", "family", "birth_date", "phones", "email", "record_number"} <= marked


def test_demo_people_are_valid_and_clearly_synthetic() -> None:
    rng = random.Random(3)  # noqa: S311 - demo data, not security
    people = [demo_person(rng) for _ in range(20)]
    assert all(details_problems(person, TODAY) == {} for person in people)
    assert all(person.phones[0].startswith("+1 555 01") for person in people)
    assert all(person.email.endswith("@example.org") for person in people)
