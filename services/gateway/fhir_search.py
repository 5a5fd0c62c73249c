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


_COMPARATORS: Final = ("ge", "gt", "le", "lt", "eq")


def _matches_date(value: datetime, criteria: Sequence[str]) -> bool:
    for criterion in criteria:
        prefix = criterion[:2] if criterion[:2] in _COMPARATORS else "eq"
        text = criterion[2:] if criterion[:2] in _COMPARATORS else criterion
        try:
            bound = datetime.fromisoformat(text)
        except ValueError as exc:
            raise FhirError(400, RejectionCode.MALFORMED_JSON, f"_lastUpdated {criterion!r} is not a date") from exc
        if bound.tzinfo is None:
            bound = bound.replace(tzinfo=UTC)
        checks = {
            "ge": value >= bound,
            "gt": value > bound,
            "le": value <= bound,
            "lt": value < bound,
            "eq": value == bound,
        }
        if not checks[prefix]:
            return False
    return True


SEARCH_PARAMETERS: Final = frozenset(
    {"owner", "requester", "status", "patient", "identifier", "_lastUpdated", "_count", "_offset"}
)


def search_tasks(views: Iterable[TaskView], parameters: Mapping[str, Sequence[str]]) -> list[TaskView]:
    """Tasks matching every parameter, newest change first.

    The parameters: ``owner``, ``requester``, ``status``, ``patient``, ``identifier``, ``_lastUpdated``.
    """
    unknown = set(parameters) - SEARCH_PARAMETERS
    if unknown:
        raise FhirError(400, GatewayCode.UNSUPPORTED, f"unsupported search parameters: {', '.join(sorted(unknown))}")

    def value_of(name: str) -> set[str]:
        return {parse_token_search(v.split("/")[-1])[1] for raw in parameters.get(name, ()) for v in raw.split(",")}

    found = []
    for view in views:
        referral = view.referral
        task_status = referral_fhir.business_status(referral).fhir_task_status
        checks = [
            ("owner", referral.recipient_clinic),
            ("requester", referral.referring_clinic),
            ("status", task_status),
            ("patient", referral.patient_ref),
            ("identifier", str(referral.referral_id)),
        ]
        if all(name not in parameters or actual in value_of(name) for name, actual in checks) and _matches_date(
            referral.history[-1].at, parameters.get("_lastUpdated", ())
        ):
            found.append(view)
    found.sort(key=lambda v: v.referral.history[-1].at, reverse=True)
    return found


AUDIT_SEARCH_PARAMETERS: Final = frozenset({"date", "_count", "_offset"})
_INSTANT: Final = timedelta(microseconds=1)


def audit_date_bounds(parameters: Mapping[str, Sequence[str]]) -> tuple[datetime | None, datetime | None]:
    """``date=ge…`` / ``gt…`` / ``le…`` / ``lt…`` as an inclusive start and an exclusive end.

    ``date`` is when the audited message occurred (``AuditEvent.period.start``); ``eq`` and
    other parameters are refused rather than ignored.
    """
    unknown = set(parameters) - AUDIT_SEARCH_PARAMETERS
    if unknown:
        raise FhirError(400, GatewayCode.UNSUPPORTED, f"unsupported search parameters: {', '.join(sorted(unknown))}")
    since: datetime | None = None
    until: datetime | None = None
    for criterion in parameters.get("date", ()):
        prefix, text = criterion[:2], criterion[2:]
        if prefix not in {"ge", "gt", "le", "lt"}:
            raise FhirError(400, GatewayCode.UNSUPPORTED, f"date {criterion!r}: use the prefixes ge, gt, le or lt")
        try:
            bound = datetime.fromisoformat(text)
        except ValueError as exc:
            raise FhirError(400, RejectionCode.MALFORMED_JSON, f"date {criterion!r} is not a date") from exc
        if bound.tzinfo is None:
            bound = bound.replace(tzinfo=UTC)
        if prefix in {"ge", "gt"}:
            start = bound + _INSTANT if prefix == "gt" else bound
            since = start if since is None else max(since, start)
        else:
            end = bound + _INSTANT if prefix == "le" else bound
            until = end if until is None else min(until, end)
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
