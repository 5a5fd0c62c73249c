"""SMART scopes by the grammar: what a token may carry, pure.

A scope is ``system/<Type>.<permissions>[?<param>=<value>]``. The permissions are SMART v1's
words (``read`` is v2's ``rs``, ``write`` is ``cud``, ``*`` all five) or SMART v2's letters
``c r u d s``, each at most once and in that order; anything else (``rd``, ``sr``, ``reads``)
is not a scope and grants nothing. A ``?query`` narrows a scope to the resources matching
it: the gateway does not enforce such narrowing, so a scope with one is refused rather than
granted wider than asked (SMART: a server must not drop the query and grant the whole type).

A token gets the intersection of what was asked, what the client was registered for (its
ceiling, set by ``hubctl gateway client add --scope``) and what the gateway offers; asking for
nothing asks for the whole ceiling. ``patient/``, ``user/``, ``openid`` and the like are not
for a backend service and are left out; a request left with nothing granted is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from referral_hub.errors import HubError

LETTERS: Final = "cruds"
V1_PERMISSIONS: Final[Mapping[str, str]] = {"read": "rs", "write": "cud", "*": LETTERS}
SUPPORTED_SCOPES: Final = (
    "system/Task.cruds",
    "system/ServiceRequest.rs",
    "system/Patient.r",
    "system/Communication.crs",
    "system/DocumentReference.crs",
    "system/Binary.r",
    "system/Subscription.cruds",
    "system/CarePlan.crus",
    "system/CareTeam.rs",
    "system/Flag.crus",
    "system/DetectedIssue.rs",
    "system/AuditEvent.rs",
)
"""What the gateway offers a token: SMART v2 ``system/<Resource>.<c r u d s>``."""
_SCOPE: Final = re.compile(
    r"(?P<context>[a-z]+)/(?P<type>\*|[A-Z][A-Za-z]{0,63})\.(?P<permissions>read|write|\*|c?r?u?d?s?)"
    r"(?:\?(?P<query>.*))?",
    re.DOTALL,
)


class ScopeError(HubError):
    """A scope request the gateway refuses (``invalid_scope``): nothing it could grant as asked."""


@dataclass(frozen=True)
class Scope:
    """One parsed SMART scope: a resource type (or ``*``) and v2 permission letters."""

    resource: str
    permissions: str


def parse(scope: str) -> Scope | None:
    """A ``system/`` scope, ``None`` for anything that is not one; :class:`ScopeError` for a ``?query``."""
    found = _SCOPE.fullmatch(scope)
    if found is None or found["context"] != "system" or not found["permissions"]:
        return None
    if found["query"] is not None:
        msg = f"{scope!r}: scopes narrowed by a search parameter are not offered; ask without it"
        raise ScopeError(msg)
    permissions = V1_PERMISSIONS.get(found["permissions"], found["permissions"])
    return Scope(found["type"], permissions)


def _table(scopes: Iterable[str], types: Iterable[str]) -> dict[str, set[str]]:
    """Resource type to permission letters, ``*`` spread over ``types``."""
    table: dict[str, set[str]] = {}
    for text in scopes:
        scope = parse(text)
        if scope is None:
            continue
        for name in types if scope.resource == "*" else (scope.resource,):
            table.setdefault(name, set()).update(scope.permissions)
    return table


def _render(table: Mapping[str, set[str]], order: Iterable[str]) -> tuple[str, ...]:
    return tuple(
        f"system/{name}.{''.join(p for p in LETTERS if p in table[name])}" for name in order if table.get(name)
    )


def offered_types() -> tuple[str, ...]:
    """The resource types the gateway offers scopes on."""
    return tuple(scope.removeprefix("system/").partition(".")[0] for scope in SUPPORTED_SCOPES)


def ceiling(scopes: Iterable[str]) -> tuple[str, ...]:
    """A client's registered ceiling, normalised to v2 letters within what is offered.

    Raises :class:`ScopeError` when nothing in ``scopes`` is an offered scope.
    """
    types = offered_types()
    offered = _table(SUPPORTED_SCOPES, types)
    wanted = _table(scopes, types)
    kept = _render({name: wanted[name] & offered.get(name, set()) for name in wanted}, types)
    if not kept:
        msg = f"none of {' '.join(scopes)!r} is a scope the gateway offers"
        raise ScopeError(msg)
    return kept


def grant(requested: str, client_ceiling: Iterable[str]) -> tuple[str, ...]:
    """The scopes a token gets: asked ∩ the client's ceiling ∩ offered (the ceiling when nothing is asked)."""
    types = offered_types()
    allowed = _table(ceiling(client_ceiling), types)
    if not requested.strip():
        return _render(allowed, types)
    asked = _table(requested.split(), types)
    granted = _render({name: asked[name] & allowed.get(name, set()) for name in asked}, types)
    if not granted:
        msg = f"none of the scopes {requested!r} is granted to this client"
        raise ScopeError(msg)
    return granted


def allows(scopes: Iterable[str], resource: str, permission: str) -> bool:
    """Whether granted (v2, per type) ``scopes`` allow ``permission`` (one of ``cruds``) on ``resource``."""
    table = _table(scopes, (resource,))
    return permission in table.get(resource, set())
