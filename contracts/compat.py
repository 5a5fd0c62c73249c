"""JSON Schema export and the backward-compatibility check for published contracts.

A published contract may gain optional fields, new enum values and new union members. It
may never lose a field, change a field's schema, or gain a required field: any of those
breaks a clinic that was built against the published version.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Final

import msgspec

from referral_hub.contracts.audit import AuditEntry
from referral_hub.contracts.codec import COMMAND_TYPES, HUB_MESSAGE_TYPES
from referral_hub.contracts.registry import Registry
from referral_hub.contracts.rejections import DeadLetter

Schema = dict[str, Any]

PUBLISHED_VERSION: Final = "v1"
EXPORTED_TYPES: Final[tuple[type[msgspec.Struct], ...]] = (
    *COMMAND_TYPES,
    *HUB_MESSAGE_TYPES,
    DeadLetter,
    AuditEntry,
    Registry,
)
_IGNORED_KEYS: Final = frozenset({"description", "title", "examples"})


def current_components() -> dict[str, Schema]:
    """JSON Schema components of every exported contract, keyed by Struct name, as JSON sees them."""
    _, components = msgspec.json.schema_components(
        EXPORTED_TYPES,
        ref_template="#/components/schemas/{name}",
    )
    normalised: dict[str, Schema] = json.loads(msgspec.json.encode(components))
    return normalised


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
