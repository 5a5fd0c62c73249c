r"""A clinic sends an identifier with a control character in it: every constrained field refuses it.

msgspec checks a ``pattern`` with ``re.search``; a pattern that ends in ``$`` also matches
before a final newline, so ``"pt-1\n"`` passed for a patient reference: a different care team
that escapes the screening hold and reads exactly like ``pt-1`` in the portal. Every pattern of
every contract is found by walking the contracts' types, and for each a property test inserts
control characters (and the Unicode line breaks) anywhere in a value the pattern otherwise
accepts; then a whole referral is decoded as the hub decodes a clinic's command.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from typing import Annotated, Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import referral_hub.contracts
from referral_hub.contracts.codec import SchemaViolationError, decode_command, encode
from tests.helpers import referral_request

LINE_BREAKS = st.just("\n") | st.characters(categories=["Cc"]) | st.sampled_from(["\r", "\x85", "\u2028", "\u2029"])
"""A newline first: it is what ``$`` lets through at the end, so every run tries it there."""


def contract_types() -> list[type[msgspec.Struct]]:
    """Every Struct the contracts package defines, in every module of it."""
    found: dict[str, type[msgspec.Struct]] = {}
    for module_info in pkgutil.iter_modules(referral_hub.contracts.__path__):
        module = importlib.import_module(f"referral_hub.contracts.{module_info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, msgspec.Struct) and value.__module__ == module.__name__:
                found[f"{module.__name__}.{value.__qualname__}"] = value
    return list(found.values())


def _walk(info: mi.Type, where: str, seen: set[type]) -> Iterator[tuple[str, mi.StrType]]:  # noqa: C901 - one branch per kind of type
    if isinstance(info, mi.StrType) and info.pattern is not None:
        yield where, info
    elif isinstance(info, mi.Metadata):
        yield from _walk(info.type, where, seen)
    elif isinstance(info, mi.StructType) and info.cls not in seen:
        seen.add(info.cls)
        for field in info.fields:
            yield from _walk(field.type, f"{info.cls.__name__}.{field.name}", seen)
    elif isinstance(info, mi.UnionType):
        for option in info.types:
            yield from _walk(option, where, seen)
    elif isinstance(info, mi.ListType | mi.VarTupleType | mi.SetType | mi.FrozenSetType):
        yield from _walk(info.item_type, f"{where}[]", seen)
    elif isinstance(info, mi.TupleType):
        for item in info.item_types:
            yield from _walk(item, f"{where}[]", seen)
    elif isinstance(info, mi.DictType):
        yield from _walk(info.key_type, f"{where}{{key}}", seen)
        yield from _walk(info.value_type, f"{where}{{}}", seen)


def constrained_fields() -> dict[str, mi.StrType]:
    """Every field of every contract whose text is constrained by a pattern, by where it is."""
    seen: set[type] = set()
    fields: dict[str, mi.StrType] = {}
    for kind in contract_types():
        fields.update(_walk(mi.type_info(kind), kind.__name__, seen))
    return fields


FIELDS = constrained_fields()
CONSTRAINTS = {(info.pattern, info.min_length, info.max_length): info for info in FIELDS.values()}
"""The distinct constraints among :data:`FIELDS`: msgspec checks a field by its constraint alone,
so a property of each constraint is a property of every field that has it."""


def as_type(info: mi.StrType) -> Any:
    """The field's own constraints, as a type msgspec converts to."""
    return Annotated[str, msgspec.Meta(pattern=info.pattern, min_length=info.min_length, max_length=info.max_length)]


def test_the_walk_finds_the_identifiers_a_clinic_sends() -> None:
    found = {where.split(".", 1)[1] for where in FIELDS}

    assert {"patient_ref", "sender_clinic", "actor", "recipient_clinic", "id", "start"} <= found


@pytest.mark.parametrize(
    "constraint",
    list(CONSTRAINTS),
    ids=lambda c: f"{c[0]} ({sum(1 for i in FIELDS.values() if (i.pattern, i.min_length, i.max_length) == c)} fields)",
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_no_constrained_field_accepts_a_control_character_anywhere(
    constraint: tuple[str, int | None, int | None], data: st.DataObject
) -> None:
    info = CONSTRAINTS[constraint]
    assert info.pattern is not None
    high = info.max_length if info.max_length is not None else 64
    valid = data.draw(st.from_regex(info.pattern, fullmatch=True).filter(lambda text: len(text) < high))
    at = data.draw(st.just(len(valid)) | st.integers(0, len(valid)))
    bad = valid[:at] + data.draw(LINE_BREAKS) + valid[at:]

    assert msgspec.convert(valid, as_type(info)) == valid
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(bad, as_type(info))


@pytest.mark.parametrize(
    ("field", "value"),
    [("patient_ref", "pt-1\n"), ("sender_clinic", "harbor-pt\n"), ("actor", "ben.okafor\n")],
)
def test_a_referral_whose_identifier_ends_in_a_newline_is_refused_as_a_schema_violation(field: str, value: str) -> None:
    request = referral_request(sender="harbor-pt", recipient="lotus-acu", actor="ben.okafor", patient_ref="pt-1")
    data = encode(request).replace(f'"{getattr(request, field)}"'.encode(), msgspec.json.encode(value), 1)
    assert msgspec.json.decode(data)[field] == value

    with pytest.raises(SchemaViolationError, match=field):
        decode_command(data)
