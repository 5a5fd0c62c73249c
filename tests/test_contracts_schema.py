"""`hubctl contracts export`'s contracts.schema.json, checked by an independent validator (jsonschema).

The file must be one self-contained JSON Schema Draft 2020-12 document: ``$schema``, ``$id``,
every contract under ``$defs`` and every ``$ref`` resolving inside the file (the validator is
given no other document, so a dangling ref cannot be fetched from anywhere). Real messages of
every contract, built from the Structs' own types and constraints and encoded by the hub's
codec, must validate against their ``$defs`` entry; a message missing a required field must not.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
import referencing
import referencing.exceptions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing.jsonschema import DRAFT202012

from referral_hub.cli import commands
from referral_hub.contracts.audit import AuditCheckpoint, AuditEntry
from referral_hub.contracts.codec import COMMAND_TYPES, HUB_MESSAGE_TYPES, encode
from referral_hub.contracts.compat import EXPORTED_TYPES, breaking_changes, current_components, published_components
from referral_hub.contracts.inbox import InboxPage, InboxRead
from referral_hub.contracts.registry import Clinic, Registry, WorkingHours, known_timezones
from referral_hub.contracts.rejections import DeadLetter

DIALECT = "https://json-schema.org/draft/2020-12/schema"
CONTRACTS: tuple[type[msgspec.Struct], ...] = tuple(
    {kind.__name__: kind for kind in (*EXPORTED_TYPES, InboxRead, InboxPage, AuditCheckpoint)}.values()
)
"""Every exported contract; the inbox read request and reply and the audit checkpoint named again,
so that dropping them from the export fails here."""
STORED_MESSAGES: tuple[type[msgspec.Struct], ...] = (
    *COMMAND_TYPES,
    *HUB_MESSAGE_TYPES,
    DeadLetter,
    AuditEntry,
    AuditCheckpoint,
)
"""What the hub stores on a stream subject: what the document's root accepts."""
MAX_ITEMS = 3
MAX_TEXT = 40
JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.text(max_size=10)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=MAX_ITEMS) | st.dictionaries(st.text(max_size=8), inner, max_size=MAX_ITEMS),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """contracts.schema.json exactly as `hubctl contracts export --out DIR` writes it."""
    directory: Path = tmp_path_factory.mktemp("contracts")
    assert commands.contracts_export(argparse.Namespace(out=directory)) == 0
    document: dict[str, Any] = json.loads((directory / "contracts.schema.json").read_text())
    return document


def _registry(document: dict[str, Any]) -> referencing.Registry[Any]:
    """A registry holding this one document and nothing else: no ref can resolve anywhere but in it."""
    return referencing.Registry().with_resource(
        document["$id"], referencing.Resource.from_contents(document, default_specification=DRAFT202012)
    )


def refs_in(node: object, path: str = "") -> Iterator[tuple[str, str]]:
    """Every ``$ref`` in a schema, with where it is."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield path or "/", value
            else:
                yield from refs_in(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from refs_in(item, f"{path}/{index}")


def dangling_refs(document: dict[str, Any]) -> list[str]:
    """The refs of ``document`` that do not resolve inside it."""
    resolver = _registry(document).resolver(base_uri=document.get("$id", ""))
    dangling = []
    for where, ref in refs_in(document):
        try:
            resolver.lookup(ref)
        except referencing.exceptions.Unresolvable:
            dangling.append(f"{where}: {ref}")
    return dangling


def validator_for(document: dict[str, Any], name: str) -> Draft202012Validator:
    return Draft202012Validator(
        {"$ref": f"{document['$id']}#/$defs/{name}"},
        registry=_registry(document),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def _bounded(low: int | None, high: int | None, cap: int) -> tuple[int, int]:
    low = low or 0
    return low, max(low, min(high if high is not None else cap, low + cap))


def _text(info: mi.StrType) -> st.SearchStrategy[str]:
    low, high = _bounded(info.min_length, info.max_length, MAX_TEXT)
    if info.pattern is None:
        return st.text(st.characters(codec="utf-8"), min_size=low, max_size=high)
    return st.from_regex(info.pattern, fullmatch=True).filter(lambda text: low <= len(text) <= high)


def _integer(info: mi.IntType) -> st.SearchStrategy[int]:
    low = info.ge if info.ge is not None else (info.gt + 1 if info.gt is not None else -(2**31))
    high = info.le if info.le is not None else (info.lt - 1 if info.lt is not None else 2**31)
    return st.integers(low, high)


def _collection(info: mi.Type) -> st.SearchStrategy[Any]:
    assert isinstance(info, mi.ListType | mi.VarTupleType | mi.SetType | mi.FrozenSetType)
    low, high = _bounded(info.min_length, info.max_length, MAX_ITEMS)
    unique = isinstance(info, mi.SetType | mi.FrozenSetType)
    return st.lists(values(info.item_type), min_size=low, max_size=high, unique=unique)


def _struct(info: mi.StructType) -> st.SearchStrategy[dict[str, Any]]:
    required = {field.encode_name: values(field.type) for field in info.fields if field.required}
    optional = {field.encode_name: values(field.type) for field in info.fields if not field.required}
    fixed = {info.tag_field: st.just(info.tag)} if info.tag_field is not None else {}
    return st.fixed_dictionaries({**fixed, **required}, optional=optional)


def values(info: mi.Type) -> st.SearchStrategy[Any]:  # noqa: C901, PLR0911, PLR0912 - one branch per kind of type
    """Python values ``msgspec.convert`` turns into an instance of the type ``info`` describes."""
    if isinstance(info, mi.Metadata):
        return values(info.type)
    if isinstance(info, mi.StructType):
        return _struct(info)
    if isinstance(info, mi.UnionType):
        return st.one_of(*(values(option) for option in info.types))
    if isinstance(info, mi.StrType):
        return _text(info)
    if isinstance(info, mi.IntType):
        return _integer(info)
    if isinstance(info, mi.ListType | mi.VarTupleType | mi.SetType | mi.FrozenSetType):
        return _collection(info)
    if isinstance(info, mi.TupleType):
        return st.tuples(*(values(item) for item in info.item_types))
    if isinstance(info, mi.DictType):
        return st.dictionaries(values(info.key_type), values(info.value_type), max_size=MAX_ITEMS)
    if isinstance(info, mi.BytesType | mi.ByteArrayType | mi.MemoryViewType):
        low, high = _bounded(info.min_length, info.max_length, MAX_TEXT)
        return st.binary(min_size=low, max_size=high)
    if isinstance(info, mi.DateTimeType):
        return st.datetimes(timezones=st.just(UTC) if info.tz is not False else st.none())
    scalars: dict[type[mi.Type], st.SearchStrategy[Any]] = {
        mi.BoolType: st.booleans(),
        mi.NoneType: st.none(),
        mi.FloatType: st.floats(allow_nan=False, allow_infinity=False),
        mi.UUIDType: st.uuids(),
        mi.DateType: st.dates(),
        mi.AnyType: JSON_VALUES,
        mi.RawType: JSON_VALUES.map(lambda value: msgspec.Raw(json.dumps(value).encode())),
    }
    if type(info) in scalars:
        return scalars[type(info)]
    if isinstance(info, mi.EnumType):
        return st.sampled_from(list(info.cls))
    if isinstance(info, mi.LiteralType):
        return st.sampled_from(info.values)
    msg = f"no generator for {info!r}: add one so its contract is tested"
    raise NotImplementedError(msg)


def _pageable(clinic: Clinic, zone: str) -> Clinic:
    """``clinic`` with what the roster check refuses beyond the schema made right: a real time zone,
    a rotation of its own members, sane working hours and no overrides."""
    oncall = clinic.oncall
    if oncall is not None:
        oncall = msgspec.structs.replace(oncall, members=tuple(member.id for member in clinic.members))
    return msgspec.structs.replace(
        clinic, timezone=zone, oncall=oncall, oncall_overrides=(), working_hours=WorkingHours()
    )


def _registries() -> st.SearchStrategy[Registry]:
    clinics = st.builds(
        _pageable,
        values(mi.type_info(Clinic)).map(lambda fields: msgspec.convert(fields, Clinic)),
        st.sampled_from(sorted(known_timezones())),
    )
    return st.lists(clinics, max_size=MAX_ITEMS).map(lambda chosen: Registry(clinics=tuple(chosen)))


def real_messages(kind: type[msgspec.Struct]) -> st.SearchStrategy[bytes]:
    """Wire bytes of valid ``kind`` instances: built by msgspec from generated fields, encoded by the codec.

    A registry is also checked beyond its schema (rosters the hub can page with), so its clinics
    are generated from the schema and then given what that check asks for.
    """
    if kind is Registry:
        return _registries().map(encode)
    return values(mi.type_info(kind)).map(lambda fields: encode(msgspec.convert(fields, kind)))


def test_the_export_is_a_self_contained_draft_2020_12_schema(exported: dict[str, Any]) -> None:
    assert exported["$schema"] == DIALECT
    assert "://" in exported["$id"] or exported["$id"].startswith("urn:"), "an absolute URI"
    assert "#" not in exported["$id"]
    Draft202012Validator.check_schema(exported)
    assert not {kind.__name__ for kind in CONTRACTS} - set(exported["$defs"])
    assert "components" not in exported
    assert dangling_refs(exported) == []
    planted = json.loads(json.dumps(exported))
    planted["$defs"]["Planted"] = {"$ref": "#/$defs/NoSuchContract"}
    assert dangling_refs(planted) == ["/$defs/Planted: #/$defs/NoSuchContract"], "the ref check must catch one"


@pytest.mark.parametrize("kind", CONTRACTS, ids=lambda kind: kind.__name__)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_real_messages_of_every_contract_validate_against_the_export(
    exported: dict[str, Any], kind: type[msgspec.Struct], data: st.DataObject
) -> None:
    wire = data.draw(real_messages(kind))
    assert msgspec.json.decode(wire, type=kind) is not None, "the hub itself accepts what was generated"

    validator_for(exported, kind.__name__).validate(json.loads(wire))


def _required_fields(kind: type[msgspec.Struct]) -> list[str]:
    info = mi.type_info(kind)
    assert isinstance(info, mi.StructType)
    return [field.encode_name for field in info.fields if field.required]


WITH_REQUIRED_FIELDS = tuple(kind for kind in CONTRACTS if _required_fields(kind))


def test_nearly_every_contract_has_a_required_field_to_leave_out() -> None:
    assert {kind.__name__ for kind in CONTRACTS} - {kind.__name__ for kind in WITH_REQUIRED_FIELDS} == {"InboxRead"}


@pytest.mark.parametrize("kind", WITH_REQUIRED_FIELDS, ids=lambda kind: kind.__name__)
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_a_message_without_a_required_field_fails_both_the_codec_and_the_export(
    exported: dict[str, Any], kind: type[msgspec.Struct], data: st.DataObject
) -> None:
    document = json.loads(data.draw(real_messages(kind)))
    del document[data.draw(st.sampled_from(_required_fields(kind)))]

    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps(document), type=kind)
    with pytest.raises(ValidationError):
        validator_for(exported, kind.__name__).validate(document)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_the_documents_root_accepts_every_stored_message(exported: dict[str, Any], data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(STORED_MESSAGES))
    root = Draft202012Validator(
        exported, registry=_registry(exported), format_checker=Draft202012Validator.FORMAT_CHECKER
    )

    root.validate(json.loads(data.draw(real_messages(kind))))


def test_the_documents_root_refuses_what_is_no_stored_message(exported: dict[str, Any]) -> None:
    root = Draft202012Validator(exported, registry=_registry(exported))

    assert not root.is_valid({"type": "referral.request"}), "a command without its fields"
    assert not root.is_valid({"type": "no.such.type", "schema_version": 1})
    assert not root.is_valid([])


def test_what_the_compatibility_check_guards_is_what_is_exported(exported: dict[str, Any]) -> None:
    """The snapshot check compares component maps; each is the export's $defs entry, refs aside."""
    published = published_components()
    as_components = json.loads(json.dumps(exported["$defs"]).replace('"#/$defs/', '"#/components/schemas/'))

    assert set(published) <= set(as_components)
    assert breaking_changes(published, as_components) == []
    assert {name: as_components[name] for name in current_components()} == current_components()
