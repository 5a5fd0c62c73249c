"""AuditEvent: search of the clinic's own audit entries, served when an audit index is configured."""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlencode

import structlog
from litestar import Request, Response, get

from referral_hub.audit.audit_event import to_audit_event
from referral_hub.gateway import fhir_search, outcomes
from referral_hub.gateway.outcomes import FhirError, GatewayCode
from referral_hub.gateway.web import fhir, gateway_of, parameters

log = structlog.get_logger(__name__)


# --- AuditEvent ------------------------------------------------------------------------------

AUDIT_MAX_OFFSET: Final = 10_000
"""How deep ``_offset`` pages reach; narrow the ``date`` range for older entries."""


@get("/fhir/AuditEvent")
async def search_audit_event(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The clinic's own audit entries (``date=ge…&date=lt…&_count=``) as AuditEvents, oldest first, paged."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "AuditEvent", "s")
    audit = gateway.started.audit
    if audit is None:
        raise outcomes.not_found("AuditEvent", "")  # noqa: EM101 - the resource's name, not a message
    query = parameters(request)
    since, until = fhir_search.audit_date_bounds(query)
    offset, count = fhir_search.page_bounds(query)
    if offset > AUDIT_MAX_OFFSET:
        msg = f"_offset reaches at most {AUDIT_MAX_OFFSET}; narrow the date range instead"
        raise FhirError(400, GatewayCode.UNSUPPORTED, msg)
    entries = await audit.entries(grant.clinic, since, until, offset + count + 1)
    page = entries[offset : offset + count]
    base = f"{gateway.settings.fhir_base}/AuditEvent"
    plain = {k: v for k, v in query.items() if k not in {"_offset", "_count"}}

    def link_to(start: int) -> str:
        return f"{base}?{urlencode({**plain, '_count': [str(count)], '_offset': [str(start)]}, doseq=True)}"

    links = {"self": link_to(offset)}
    if len(entries) > offset + count:
        links["next"] = link_to(offset + count)
    if offset > 0:
        links["previous"] = link_to(max(0, offset - count))
    bundle = fhir_search.searchset(gateway.settings.fhir_base, [to_audit_event(e) for e in page], 0, links)
    del bundle["total"]
    return fhir(bundle)


HANDLERS: Final = (search_audit_event,)
