"""JSON Schema export and the backward-compatibility check for published contracts.

A published contract may gain optional fields, new enum values and new union members. It
may never lose a field, change a field's schema, or gain a required field: any of those
breaks a clinic that was built against the published version.

The check compares component maps (each contract's schema by name, as the AsyncAPI
document's ``components.schemas`` holds them), so the snapshot is independent of how the
export is packaged. The export (:func:`schema_document`) is the same components, re-rooted
as one self-contained JSON Schema 2020-12 document a validator needs nothing else for.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Final, cast

import msgspec

from referral_hub.contracts.audit import AuditCheckpoint, AuditEntry
from referral_hub.contracts.codec import COMMAND_TYPES, HUB_MESSAGE_TYPES, ClinicCommand, HubMessage
from referral_hub.contracts.inbox import InboxPage, InboxRead
from referral_hub.contracts.registry import Registry
from referral_hub.contracts.rejections import DeadLetter

Schema = dict[str, Any]

PUBLISHED_VERSION: Final = "v1"
EXPORTED_TYPES: Final[tuple[type[msgspec.Struct], ...]] = (
    *COMMAND_TYPES,
    *HUB_MESSAGE_TYPES,
    DeadLetter,
    AuditEntry,
    AuditCheckpoint,
    InboxRead,
    InboxPage,
    Registry,
)
COMPONENT_REF: Final = "#/components/schemas/"
DEFS_REF: Final = "#/$defs/"
SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID: Final = f"urn:referral-hub:contracts:{PUBLISHED_VERSION}"
"""The export's ``$id``: a name, not a location, so nothing is ever fetched to resolve a ref."""
WIRE_UNIONS: Final = {"ClinicCommand": ClinicCommand, "HubMessage": HubMessage}
"""The tagged unions a reader decodes a subject's messages with, exported under these names."""
WIRE_ROOTS: Final = ("ClinicCommand", "HubMessage", "DeadLetter", "AuditEntry", "AuditCheckpoint")
"""What the export's root accepts: any message the hub stores on a stream subject."""
_IGNORED_KEYS: Final = frozenset({"description", "title", "examples"})


PYTHON_END: Final = "\\Z"
"""How a contract's pattern says "end of the string" to Python's ``re`` (:mod:`referral_hub.contracts.base`)."""


def _ecma_patterns(node: object) -> object:
    r"""``node`` with each ``pattern``'s closing ``\Z`` written ``$``, its JSON Schema (ECMA-262) spelling.

    ECMA-262 has no ``\Z`` (with the ``u`` flag it is a syntax error) and its ``$`` without the
    ``m`` flag matches only at the end, which is what ``\Z`` means to Python; so the published
    schema says exactly what the hub checks, and its text is unchanged.
    """
    if isinstance(node, list):
        return [_ecma_patterns(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {
        key: value.removesuffix(PYTHON_END) + "$"
        if key == "pattern" and isinstance(value, str) and value.endswith(PYTHON_END)
        else _ecma_patterns(value)
        for key, value in node.items()
    }


def current_components() -> dict[str, Schema]:
    """JSON Schema components of every exported contract, keyed by Struct name, as JSON sees them."""
    _, components = msgspec.json.schema_components(EXPORTED_TYPES, ref_template=COMPONENT_REF + "{name}")
    normalised: dict[str, Schema] = json.loads(msgspec.json.encode(components))
    return {name: cast("Schema", _ecma_patterns(schema)) for name, schema in normalised.items()}


def union_components() -> dict[str, Schema]:
    """The schemas of :data:`WIRE_UNIONS`: each an ``anyOf`` of its members, discriminated by ``type``."""
    unions, _ = msgspec.json.schema_components(tuple(WIRE_UNIONS.values()), ref_template=COMPONENT_REF + "{name}")
    named: dict[str, Schema] = json.loads(msgspec.json.encode(dict(zip(WIRE_UNIONS, unions, strict=True))))
    return named


def _defs_ref(ref: object) -> object:
    if isinstance(ref, str) and ref.startswith(COMPONENT_REF):
        return DEFS_REF + ref.removeprefix(COMPONENT_REF)
    return ref


def _rerooted(node: object) -> object:
    """``node`` with every reference into ``components.schemas`` pointed at ``$defs`` instead.

    References are the ``$ref`` values and the values of a ``discriminator``'s ``mapping``.
    """
    if isinstance(node, list):
        return [_rerooted(item) for item in node]
    if not isinstance(node, dict):
        return node
    rerooted = {key: _defs_ref(value) if key == "$ref" else _rerooted(value) for key, value in node.items()}
    discriminator = rerooted.get("discriminator")
    if isinstance(discriminator, dict) and isinstance(discriminator.get("mapping"), dict):
        mapping = {tag: _defs_ref(ref) for tag, ref in discriminator["mapping"].items()}
        rerooted["discriminator"] = {**discriminator, "mapping": mapping}
    return rerooted


def schema_document() -> Schema:
    """Every contract as one self-contained JSON Schema 2020-12 document (``hubctl contracts export``).

    Each contract is under ``$defs`` by its Struct name, with the two wire unions beside them;
    every ``$ref`` points inside the document. The root accepts any message the hub stores
    on a stream subject; validate one contract with ``{"$ref": "<$id>#/$defs/<Name>"}``.
    """
    definitions = _rerooted({**current_components(), **union_components()})
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": SCHEMA_ID,
        "title": f"Referral Hub contracts {PUBLISHED_VERSION}",
        "description": (
            "Every message contract of the Referral Hub, by name under $defs. The root accepts any "
            "message the hub stores on a stream subject; ClinicCommand is what a clinic may publish "
            "on clinic.<clinic_id>.out.<type>, HubMessage what it reads from clinic.<clinic_id>.in.<type>."
        ),
        "anyOf": [{"$ref": DEFS_REF + name} for name in WIRE_ROOTS],
        "$defs": definitions,
    }


def published_components() -> dict[str, Schema]:
    """The snapshot of what was released, shipped with the package."""
    text = resources.files("referral_hub.contracts").joinpath(f"published_{PUBLISHED_VERSION}.json").read_text()
    loaded: dict[str, Schema] = json.loads(text)
    return loaded


def _significant(schema: object) -> object:
    """A schema with its prose removed, so that editing a docstring is not a break."""
    if isinstance(schema, dict):
        return {key: _significant(value) for key, value in schema.items() if key not in _IGNORED_KEYS}
    if isinstance(schema, list):
        return [_significant(item) for item in schema]
    return schema


def _object_breaks(name: str, old: Schema, new: Schema) -> list[str]:
    breaks: list[str] = []
    old_props: Schema = old.get("properties", {})
    new_props: Schema = new.get("properties", {})
    for field, old_schema in old_props.items():
        if field not in new_props:
            breaks.append(f"{name}.{field}: field removed")
        elif _significant(old_schema) != _significant(new_props[field]):
            breaks.append(f"{name}.{field}: field retyped")
    newly_required = set(new.get("required", ())) - set(old.get("required", ()))
    breaks.extend(f"{name}.{field}: field became required" for field in sorted(newly_required))
    return breaks


def breaking_changes(published: dict[str, Schema], current: dict[str, Schema]) -> list[str]:
    """Every way ``current`` breaks a client written against ``published``; empty if none."""
    breaks: list[str] = []
    for name, old in published.items():
        new = current.get(name)
        if new is None:
            breaks.append(f"{name}: contract removed")
        elif "enum" in old:
            removed = sorted(set(old["enum"]) - set(new.get("enum", ())))
            breaks.extend(f"{name}: enum value {value!r} removed" for value in removed)
        elif "anyOf" in old or "oneOf" in old:
            key = "anyOf" if "anyOf" in old else "oneOf"
            old_refs = {json.dumps(item, sort_keys=True) for item in old[key]}
            new_refs = {json.dumps(item, sort_keys=True) for item in new.get(key, ())}
            breaks.extend(f"{name}: union member {ref} removed" for ref in sorted(old_refs - new_refs))
        else:
            breaks.extend(_object_breaks(name, old, new))
    return breaks


def render(components: dict[str, Schema]) -> str:
    """Stable text form of a component set, for the snapshot file and exports."""
    return json.dumps(components, indent=2, sort_keys=True) + "\n"
