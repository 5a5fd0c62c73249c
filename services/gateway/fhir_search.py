"""Searching, pure: Task search parameters, AuditEvent date bounds, paging, and searchset Bundles."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from referral_hub.contracts.rejections import RejectionCode
from referral_hub.gateway.outcomes import FhirError, GatewayCode
from referral_hub.gateway.task_views import TaskView
from referral_hub.referrals import fhir_task as referral_fhir

MAX_PAGE: Final = 100
DEFAULT_PAGE: Final = 20


def parse_token_search(value: str) -> tuple[str, str]:
    """``system|value`` (or a bare ``value``) of a token search parameter."""
    system, bar, code = value.partition("|")
    return (system, code) if bar else ("", system)


_PREFIXES: Final = ("eq", "ne", "ge", "gt", "le", "lt")
"""The FHIR date prefixes served; ``sa``, ``eb`` and ``ap`` are refused (400), never ignored."""
_INSTANT: Final = timedelta(microseconds=1)
_DATE_LENGTHS: Final = {4: "year", 7: "month", 10: "day"}


def date_range(text: str, name: str) -> tuple[datetime, datetime]:
    """The range a FHIR date search value stands for, as a start and an exclusive end.

    A value covers its whole precision: ``2026`` the year, ``2026-12`` the month,
    ``2026-12-07`` the day (UTC), a time to the second that second, a fraction that instant.
    """
    try:
        precision = _DATE_LENGTHS.get(len(text))
        if precision == "year":
            start = datetime(int(text), 1, 1, tzinfo=UTC)
            return start, start.replace(year=start.year + 1)
        if precision == "month":
            start = datetime.strptime(text, "%Y-%m").replace(tzinfo=UTC)
            return start, (start + timedelta(days=32)).replace(day=1)
        start = datetime.fromisoformat(text)
    except ValueError as exc:
        raise FhirError(400, RejectionCode.MALFORMED_JSON, f"{name} {text!r} is not a date") from exc
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    if precision == "day":
        return start, start + timedelta(days=1)
    return start, start + (_INSTANT if "." in text else timedelta(seconds=1))


def date_criterion(criterion: str, name: str) -> tuple[str, datetime, datetime]:
    """A date search value's prefix (``eq`` when it has none) and the range it names."""
    prefix = criterion[:2] if criterion[:2].isalpha() else "eq"
    if prefix not in _PREFIXES:
        raise FhirError(400, GatewayCode.UNSUPPORTED, f"{name} {criterion!r}: use no prefix or eq, ne, ge, gt, le, lt")
    start, end = date_range(criterion[2:] if criterion[:2].isalpha() else criterion, name)
    return prefix, start, end


def _matches_date(value: datetime, criteria: Sequence[str], name: str = "_lastUpdated") -> bool:
    """Whether an instant meets every criterion, as FHIR compares an instant with a value's range."""
    for criterion in criteria:
        prefix, start, end = date_criterion(criterion, name)
        checks = {
            "eq": start <= value < end,
            "ne": not start <= value < end,
            "ge": value >= start,
            "gt": value >= end,
            "le": value < end,
            "lt": value < start,
        }
        if not checks[prefix]:
            return False
    return True


REFERENCE_SYSTEMS: Final = {
    "owner": referral_fhir.CLINIC_SYSTEM,
    "requester": referral_fhir.CLINIC_SYSTEM,
    "patient": referral_fhir.PATIENT_REF_SYSTEM,
}
"""The logical references a Task search matches, and the identifier system of each (``:identifier``)."""
SEARCH_PARAMETERS: Final = frozenset(
    {
        "owner",
        "requester",
        "status",
        "patient",
        "identifier",
        "_lastUpdated",
        "_count",
        "_offset",
        *(f"{name}:identifier" for name in REFERENCE_SYSTEMS),
    }
)


def _values(parameters: Mapping[str, Sequence[str]], name: str) -> list[str]:
    """Every value of a parameter: each repeat, each comma-separated alternative."""
    return [value for raw in parameters.get(name, ()) for value in raw.split(",")]


def _identifier_matches(view: TaskView, wanted: str) -> bool:
    """``identifier=[system|]value``: the hub's referral id, or an identifier the sender's system gave it."""
    system, value = parse_token_search(wanted)
    request = view.referral.request
    known = [(referral_fhir.REFERRAL_ID_SYSTEM, str(view.referral.referral_id))]
    known += [(identifier.system, identifier.value) for identifier in request.identifiers]
    return any(value == known_value and system in {"", known_system} for known_system, known_value in known)


def _reference_matches(name: str, actual: str, parameters: Mapping[str, Sequence[str]]) -> bool:
    """``owner=Organization/<id>`` (or the bare id), and ``owner:identifier=system|value``, of a logical reference."""
    plain = _values(parameters, name)
    if plain and actual not in {parse_token_search(value.rpartition("/")[2])[1] for value in plain}:
        return False
    by_identifier = _values(parameters, f"{name}:identifier")
    return not by_identifier or any(
        value == actual and system in {"", REFERENCE_SYSTEMS[name]}
        for system, value in map(parse_token_search, by_identifier)
    )


def search_tasks(views: Iterable[TaskView], parameters: Mapping[str, Sequence[str]]) -> list[TaskView]:
    """Tasks matching every parameter, newest change first.

    The parameters: ``owner``, ``requester``, ``patient`` (also with ``:identifier``),
    ``status``, ``identifier``, ``_lastUpdated``.
    """
    unknown = set(parameters) - SEARCH_PARAMETERS
    if unknown:
        raise FhirError(400, GatewayCode.UNSUPPORTED, f"unsupported search parameters: {', '.join(sorted(unknown))}")
    statuses = set(_values(parameters, "status"))
    identifiers = _values(parameters, "identifier")
    found = []
    for view in views:
        referral = view.referral
        references = {"owner": referral.recipient_clinic, "requester": referral.referring_clinic}
        references["patient"] = referral.patient_ref
        if (
            all(_reference_matches(name, actual, parameters) for name, actual in references.items())
            and (not statuses or referral_fhir.business_status(referral).fhir_task_status in statuses)
            and (not identifiers or any(_identifier_matches(view, wanted) for wanted in identifiers))
            and _matches_date(referral.history[-1].at, parameters.get("_lastUpdated", ()))
        ):
            found.append(view)
    found.sort(key=lambda v: v.referral.history[-1].at, reverse=True)
    return found


AUDIT_SEARCH_PARAMETERS: Final = frozenset({"date", "_count", "_offset"})


def audit_date_bounds(parameters: Mapping[str, Sequence[str]]) -> tuple[datetime | None, datetime | None]:
    """``date`` criteria as an inclusive start and an exclusive end.

    ``date`` is when the audited message occurred (``AuditEvent.period.start``). A value
    without a prefix (or ``eq``) is its whole range (``date=2026-12-07``: that day); ``ge``,
    ``gt``, ``le``, ``lt`` bound it; ``ne`` (not one range) and other parameters are refused
    rather than ignored.
    """
    unknown = set(parameters) - AUDIT_SEARCH_PARAMETERS
    if unknown:
        raise FhirError(400, GatewayCode.UNSUPPORTED, f"unsupported search parameters: {', '.join(sorted(unknown))}")
    since: datetime | None = None
    until: datetime | None = None
    for criterion in parameters.get("date", ()):
        prefix, start, end = date_criterion(criterion, "date")
        if prefix == "ne":
            raise FhirError(400, GatewayCode.UNSUPPORTED, f"date {criterion!r}: ne is not served for AuditEvent")
        low = {"eq": start, "ge": start, "gt": end}.get(prefix)
        high = {"eq": end, "le": end, "lt": start}.get(prefix)
        if low is not None:
            since = low if since is None else max(since, low)
        if high is not None:
            until = high if until is None else min(until, high)
    return since, until


def page_bounds(parameters: Mapping[str, Sequence[str]]) -> tuple[int, int]:
    """``_offset`` and ``_count`` (at most :data:`MAX_PAGE`)."""
    try:
        count = int((parameters.get("_count") or [str(DEFAULT_PAGE)])[0])
        offset = int((parameters.get("_offset") or ["0"])[0])
    except ValueError as exc:
        raise FhirError(400, RejectionCode.MALFORMED_JSON, "_count and _offset are integers") from exc
    return max(0, offset), max(0, min(count, MAX_PAGE))


def searchset(base: str, resources: Sequence[dict[str, Any]], total: int, links: Mapping[str, str]) -> dict[str, Any]:
    """A searchset Bundle with ``self`` and ``next`` links."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": [{"relation": relation, "url": url} for relation, url in links.items()],
        "entry": [
            {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in resources
        ],
    }
