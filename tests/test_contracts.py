"""Contracts: round trips, decode errors, PHI markers and backward compatibility."""

from __future__ import annotations

import json

import msgspec
import pytest

from referral_hub.cli.asyncapi import asyncapi_document
from referral_hub.contracts.base import Message
from referral_hub.contracts.codec import (
    COMMAND_TYPES,
    HUB_MESSAGE_TYPES,
    MalformedJsonError,
    SchemaViolationError,
    UnknownTypeError,
    UnsupportedVersionError,
    decode_command,
    encode,
)
from referral_hub.contracts.compat import breaking_changes, current_components, published_components
from referral_hub.contracts.referrals import ReferralRequest
from referral_hub.runtime.jetstream import topology

from .helpers import referral_request


def test_referral_request_round_trips() -> None:
    request = referral_request()

    assert decode_command(encode(request)) == request


def test_encoded_message_carries_type_tag_and_version() -> None:
    document = json.loads(encode(referral_request()))

    assert document["type"] == "referral.request"
    assert document["schema_version"] == 1


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"{not json", MalformedJsonError),
        (b'{"type": "referral.teleport"}', UnknownTypeError),
        (b'{"schema_version": 1}', UnknownTypeError),
        (b'{"type": "referral.request", "schema_version": 9}', UnsupportedVersionError),
        (b'{"type": "referral.request", "schema_version": 0}', UnsupportedVersionError),
        (b'{"type": "referral.request"}', SchemaViolationError),
        (b'"a string"', SchemaViolationError),
    ],
)
def test_decode_raises_a_specific_error(payload: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_command(payload)


def test_every_message_contract_is_frozen_and_tagged() -> None:
    for struct_type in (*COMMAND_TYPES, *HUB_MESSAGE_TYPES):
        config = struct_type.__struct_config__
        assert config.frozen, struct_type
        assert isinstance(config.tag, str), struct_type
        assert config.tag_field == "type", struct_type
        assert issubclass(struct_type, Message)


def test_phi_fields_are_marked_in_the_json_schema() -> None:
    properties = current_components()["ReferralRequest"]["properties"]

    assert properties["patient_ref"]["x-phi"] is True
    assert properties["reason"]["x-phi"] is True
    assert "x-phi" not in properties["recipient_clinic"]


def test_current_contracts_keep_the_published_v1_compatible() -> None:
    assert breaking_changes(published_components(), current_components()) == []


def test_published_snapshot_covers_every_contract() -> None:
    assert set(published_components()) == set(current_components())


class _Old(msgspec.Struct, kw_only=True):
    a: int
    b: str = ""


def _schema(*types: type) -> dict[str, dict[str, object]]:
    _, components = msgspec.json.schema_components(types)
    return json.loads(json.dumps(components))


def test_compat_allows_a_new_optional_field() -> None:
    class _Old(msgspec.Struct, kw_only=True):
        a: int
        b: str = ""
        c: int = 0

    assert breaking_changes(_schema(globals()["_Old"]), _schema(_Old)) == []


def test_compat_flags_a_removed_field() -> None:
    class _Old(msgspec.Struct, kw_only=True):
        a: int

    assert breaking_changes(_schema(globals()["_Old"]), _schema(_Old)) == ["_Old.b: field removed"]


def test_compat_flags_a_retyped_field() -> None:
    class _Old(msgspec.Struct, kw_only=True):
        a: str
        b: str = ""

    assert breaking_changes(_schema(globals()["_Old"]), _schema(_Old)) == ["_Old.a: field retyped"]


def test_compat_flags_a_new_required_field() -> None:
    class _Old(msgspec.Struct, kw_only=True):
        a: int
        b: str = ""
        c: int

    assert breaking_changes(_schema(globals()["_Old"]), _schema(_Old)) == ["_Old.c: field became required"]


def test_compat_flags_a_removed_contract_and_enum_value() -> None:
    published = {"Gone": {"type": "object", "properties": {}}, "Colour": {"enum": ["red", "green"]}}
    current = {"Colour": {"enum": ["red", "blue"]}}

    assert breaking_changes(published, current) == ["Gone: contract removed", "Colour: enum value 'green' removed"]


def test_a_request_without_optional_fields_decodes_with_defaults() -> None:
    document = json.loads(encode(referral_request()))
    for optional in ("urgency", "icd10_codes", "clinical_flags", "requested_techniques", "note", "causation_id"):
        document.pop(optional, None)

    decoded = decode_command(json.dumps(document).encode())

    assert isinstance(decoded, ReferralRequest)
    assert decoded.urgency == "routine"
    assert decoded.icd10_codes == ()


def test_the_asyncapi_document_describes_every_durable_consumer_with_its_payload() -> None:
    document = asyncapi_document()

    for spec in topology.CONSUMERS:
        operation = document["operations"].get(spec.durable)
        assert operation is not None, f"{spec.durable} is missing from the AsyncAPI document"
        assert operation["x-jetstream"]["filterSubject"] == spec.filter_subject
        assert operation["messages"], f"{spec.durable} names no message"
        for ref in operation["messages"]:
            channel, _, name = ref["$ref"].removeprefix("#/channels/").partition("/messages/")
            component = document["channels"][channel]["messages"][name]["$ref"].rsplit("/", 1)[-1]
            payload = document["components"]["messages"][component]["payload"]["$ref"]
            assert payload.rsplit("/", 1)[-1] in document["components"]["schemas"]
