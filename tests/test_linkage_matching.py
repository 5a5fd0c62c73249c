"""The hub's matcher grades candidates from keys alone, precision first."""

from __future__ import annotations

import msgspec

from referral_hub.linkage.linkage_keys import LinkageKeys, Person, make_keys
from referral_hub.linkage.matching import LinkageIndex, MatchGrade

from .test_linkage_keys import SECRET

MAYA = Person(
    given_name="Maya",
    family_name="Okonkwo",
    birth_date="1990-06-15",
    sex="F",
    postcode="2000",
    address="12 Harbour Street",
    phone="0412 345 678",
)


def index_of(**people: Person) -> LinkageIndex:
    index = LinkageIndex()
    for record, person in people.items():
        index.add(record, make_keys(person, SECRET))
    return index


def best_grade(index: LinkageIndex, person: Person) -> MatchGrade:
    found = index.best(make_keys(person, SECRET))
    return found.grade if found else MatchGrade.CERTAINLY_NOT


def test_the_same_details_are_certain() -> None:
    assert best_grade(index_of(maya=MAYA), MAYA) is MatchGrade.CERTAIN


def test_a_typo_and_a_new_phone_still_find_the_person() -> None:
    typed = msgspec.structs.replace(MAYA, family_name="Okonkow", phone="0499 000 111")

    assert best_grade(index_of(maya=MAYA), typed) in {MatchGrade.CERTAIN, MatchGrade.PROBABLE}


def test_a_twin_is_at_most_a_possible_match() -> None:
    twin = msgspec.structs.replace(MAYA, given_name="Nia")

    assert best_grade(index_of(maya=MAYA), twin) is MatchGrade.POSSIBLE


def test_a_parent_of_the_same_name_is_at_most_a_possible_match() -> None:
    parent = msgspec.structs.replace(MAYA, birth_date="1962-01-03")

    assert best_grade(index_of(maya=MAYA), parent) is MatchGrade.POSSIBLE


def test_a_stranger_is_no_candidate() -> None:
    stranger = Person(given_name="Tom", family_name="Berg", birth_date="1971-01-01", postcode="3000")

    assert index_of(maya=MAYA).best(make_keys(stranger, SECRET)) is None


def test_a_removed_record_is_never_proposed() -> None:
    index = index_of(maya=MAYA)
    index.remove("maya")

    assert index.best(make_keys(MAYA, SECRET)) is None
    assert len(index) == 0


def test_keys_of_another_scheme_match_nothing() -> None:
    keys = make_keys(MAYA, SECRET)
    future = LinkageKeys(scheme=keys.scheme + 1, tokens=keys.tokens, fields=keys.fields)

    assert index_of(maya=MAYA).candidates(future) == []


def test_re_adding_a_record_replaces_its_keys() -> None:
    index = index_of(maya=MAYA)
    index.add("maya", make_keys(Person(given_name="Tom", family_name="Berg", birth_date="1971-01-01"), SECRET))

    assert index.best(make_keys(MAYA, SECRET)) is None
