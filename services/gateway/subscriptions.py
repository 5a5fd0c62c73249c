"""Topic-based Subscriptions (the R5 Backport IG on R4): the records and the Bundles, no I/O.

One topic, :data:`TOPIC_URL`: every message stored in the
subscribing clinic's inbox, optionally filtered by message type. A notification's
``event-number`` is the inbox's own gap-free event number, so a clinic can compare it with
``hubctl inbox`` and ask ``$events`` for exactly what it missed.

A subscription's record holds its settings and its delivery progress together, so one
compare-and-set write moves both: ``delivered_through`` (the last inbox number handled),
``events_since_start``, the failure count and the delivery lease.

A subscription is a clinic telling the hub where to send HTTP requests, so what it may say is
narrow: ``channel.header`` names come from :data:`ALLOWED_HEADERS` (never ``Host``,
``Content-Length``, ``Transfer-Encoding`` or another header that frames the request or is
hop-by-hop), an endpoint that is an IP address must be a public one (host names are checked
after resolution, as the request is made: ``rest_hooks``), and a clinic holds at most
:data:`MAX_PER_CLINIC` subscriptions. A failing endpoint puts the subscription in ``error``
with one wording for every failure (refused address, connection error, timeout, any status),
so the hub cannot be used to map what answers where; delivery keeps being retried, with a
capped back-off, for as long as the subscription is not ``off``.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec

from referral_hub.client import InboxItem
from referral_hub.contracts.alerts import AlertAcknowledged, AlertRaised, AlertResolved
from referral_hub.contracts.base import message_type
from referral_hub.contracts.plans import CareTeamChanged, PlanUpdated
from referral_hub.contracts.referrals import ReferralEvent
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.contracts.screening import ScreeningDisputed, ScreeningFlagged
from referral_hub.gateway import care
from referral_hub.gateway.outcomes import FhirError, GatewayCode, schema
from referral_hub.referrals import fhir_task as referral_fhir

TOPIC_URL: Final = "urn:referral-hub:SubscriptionTopic/clinic-inbox"
"""The one subscription topic: every message stored in the subscribing clinic's inbox."""
FILTER_EXTENSION: Final = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria"
HEARTBEAT_EXTENSION: Final = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period"
)
PAYLOAD_EXTENSION: Final = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content"
TIMEOUT_EXTENSION: Final = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-timeout"
STATUS_PROFILE: Final = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"
)
PAYLOADS: Final = frozenset({"empty", "id-only", "full-resource"})
FILTER_PARAMETER: Final = "message-type"
"""The topic's one filter: ``message-type=referral.requested,referral.transitioned``."""
DEFAULT_HEARTBEAT_SECONDS: Final = 60
MIN_HEARTBEAT_SECONDS: Final = 1
DEFAULT_TIMEOUT_SECONDS: Final = 5
MAX_TIMEOUT_SECONDS: Final = 30
"""The longest ``backport-timeout`` accepted: a slow receiver holds one deliverer, not the gateway."""
MAX_BACKOFF_SECONDS: Final = 30.0
FIRST_BACKOFF_SECONDS: Final = 0.5
MAX_HEADERS: Final = 8
MAX_HEADER_VALUE: Final = 1000
MAX_PER_CLINIC: Final = 10
"""Subscriptions one clinic may hold: each is a deliverer and a stream of outgoing requests."""
ALLOWED_HEADERS: Final = re.compile(
    r"Authorization|X-(?!Forwarded-|Real-IP\b|HTTP-Method)[A-Za-z0-9-]{1,60}", re.IGNORECASE
)
"""``channel.header`` names a subscription may set: ``Authorization`` and ``X-`` extension headers
(not the ones proxies trust for the client's address or to change the method)."""
_HEADER_VALUE: Final = re.compile(r"[\x20-\x7e]*")
DELIVERY_FAILED: Final = "the endpoint did not acknowledge the notification"
"""The one error recorded for any failed delivery, whatever failed: no port scanner."""
MAX_EVENTS_PER_QUERY: Final = 100
STATUS_NAMESPACE: Final = uuid.UUID("5f0c8a34-6f44-5b39-9d0e-1b8e2f7c4a61")
"""Names an event notification's status entry from its subscription and event numbers."""


class SubscriptionRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A Subscription, with where its delivery stands and who is delivering it."""

    id: str
    clinic: str
    endpoint: str
    headers: tuple[str, ...] = ()
    payload: str = "id-only"
    message_types: tuple[str, ...] = ()
    heartbeat_seconds: int = DEFAULT_HEARTBEAT_SECONDS
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    """``backport-timeout``: how long one notification may take to be acknowledged."""
    status: str = "requested"
    reason: str = ""
    start_after: int = 0
    """The inbox's last event number when the subscription was made: delivery starts above it."""
    delivered_through: int = 0
    events_since_start: int = 0
    failures: int = 0
    retry_at: float = 0.0
    error: str = ""
    lease_owner: str = ""
    lease_until: float = 0.0
    version: int = 1


def key(subscription_id: str) -> str:
    """The record's KV key."""
    return f"sub.{subscription_id}"


def _extension(element: Any, url: str) -> Any:  # noqa: ANN401 - FHIR JSON
    for extension in (element or {}).get("extension", []) if isinstance(element, dict) else []:
        if isinstance(extension, dict) and extension.get("url") == url:
            return next((v for k, v in extension.items() if k.startswith("value")), None)
    return None


def public_address(address: str) -> bool:
    """Whether an IP address is one the hub may send requests to: globally routable, unicast."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _hook_url(endpoint: Any, *, allow_private: bool) -> str:  # noqa: ANN401 - FHIR JSON
    """An https endpoint; with ``allow_private`` (development) also http on a loopback address.

    An IP-address endpoint must be a public address unless ``allow_private``; a host name is
    checked when it is resolved for each request (``rest_hooks``).
    """
    if not isinstance(endpoint, str):
        msg = "channel.endpoint is required"
        raise schema(msg)
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError as exc:
        msg = "channel.endpoint is not a URL"
        raise schema(msg) from exc
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if not host or (literal is not None and not allow_private and not public_address(host)):
        msg = "channel.endpoint must be a public https URL"
        raise schema(msg)
    loopback = literal.is_loopback if literal is not None else host == "localhost"
    if parts.scheme == "https" or (parts.scheme == "http" and loopback and allow_private):
        return endpoint
    msg = "channel.endpoint must be a public https URL"
    raise schema(msg)


def _headers(headers: Any) -> tuple[str, ...]:  # noqa: ANN401 - FHIR JSON
    """``channel.header`` as ``Name: value`` lines, every name allowed, every value printable ASCII."""
    shape = f"channel.header is up to {MAX_HEADERS} 'Name: value' strings"
    if not isinstance(headers, list) or len(headers) > MAX_HEADERS:
        raise schema(shape)
    lines = []
    for header in headers:
        if not isinstance(header, str) or ":" not in header:
            raise schema(shape)
        name, _, value = header.partition(":")
        name, value = name.strip(), value.strip()
        if not ALLOWED_HEADERS.fullmatch(name):
            msg = f"channel.header may set Authorization and X- headers only, not {name[:60]!r}"
            raise schema(msg)
        if len(value) > MAX_HEADER_VALUE or not _HEADER_VALUE.fullmatch(value):
            msg = f"the value of channel.header {name} must be printable ASCII, at most {MAX_HEADER_VALUE} characters"
            raise schema(msg)
        lines.append(f"{name}: {value}")
    return tuple(lines)


def _whole_seconds(value: Any, least: int, most: int, what: str) -> int:  # noqa: ANN401 - FHIR JSON
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        msg = f"the {what} is a whole number of seconds from {least} to {most}"
        raise schema(msg)
    return value


def parse(
    resource: Mapping[str, Any], clinic: str, subscription_id: str, start_after: int, *, allow_private: bool = False
) -> SubscriptionRecord:
    """A new Subscription resource as a record; anything the gateway does not offer is refused."""
    if resource.get("resourceType") != "Subscription":
        msg = "the resource must be a Subscription"
        raise schema(msg)
    if resource.get("criteria") != TOPIC_URL:
        msg = f"criteria must be the topic {TOPIC_URL}"
        raise FhirError(422, GatewayCode.UNSUPPORTED, msg)
    channel = resource.get("channel")
    if not isinstance(channel, dict) or channel.get("type") != "rest-hook":
        msg = "only a rest-hook channel is offered"
        raise FhirError(422, GatewayCode.UNSUPPORTED, msg)
    payload = _extension(channel.get("_payload"), PAYLOAD_EXTENSION) or "id-only"
    if payload not in PAYLOADS:
        msg = f"payload content must be one of {', '.join(sorted(PAYLOADS))}"
        raise schema(msg)
    headers = _headers(channel.get("header") or [])
    heartbeat = _extension(channel, HEARTBEAT_EXTENSION) or DEFAULT_HEARTBEAT_SECONDS
    if not isinstance(heartbeat, int) or heartbeat < MIN_HEARTBEAT_SECONDS:
        msg = "the heartbeat period is a whole number of seconds, at least 1"
        raise schema(msg)
    timeout = _extension(channel, TIMEOUT_EXTENSION)
    timeout = DEFAULT_TIMEOUT_SECONDS if timeout is None else _whole_seconds(timeout, 1, MAX_TIMEOUT_SECONDS, "timeout")
    criteria = resource.get("_criteria") or {}
    types: list[str] = []
    for criterion in criteria.get("extension", []) if isinstance(criteria, dict) else []:
        if not isinstance(criterion, dict) or criterion.get("url") != FILTER_EXTENSION:
            continue
        name, _, values = str(criterion.get("valueString", "")).partition("=")
        if name != FILTER_PARAMETER:
            msg = f"the topic's only filter is {FILTER_PARAMETER}"
            raise FhirError(422, GatewayCode.UNSUPPORTED, msg)
        types.extend(v for v in values.split(",") if v)
    return SubscriptionRecord(
        id=subscription_id,
        clinic=clinic,
        endpoint=_hook_url(channel.get("endpoint"), allow_private=allow_private),
        headers=headers,
        payload=str(payload),
        message_types=tuple(types),
        heartbeat_seconds=heartbeat,
        timeout_seconds=timeout,
        reason=str(resource.get("reason", "")),
        start_after=start_after,
        delivered_through=start_after,
    )


def resource(record: SubscriptionRecord, fhir_base: str) -> dict[str, Any]:
    """The record as a FHIR R4 Subscription with the backport extensions. Header values are not echoed."""
    criteria: dict[str, Any] = {}
    if record.message_types:
        filters = f"{FILTER_PARAMETER}={','.join(record.message_types)}"
        criteria = {"_criteria": {"extension": [{"url": FILTER_EXTENSION, "valueString": filters}]}}
    subscription: dict[str, Any] = {
        "resourceType": "Subscription",
        "id": record.id,
        "meta": {"versionId": str(record.version)},
        "status": record.status,
        "reason": record.reason or "clinic inbox",
        "criteria": TOPIC_URL,
        **criteria,
        "channel": {
            "type": "rest-hook",
            "endpoint": record.endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": PAYLOAD_EXTENSION, "valueCode": record.payload}]},
            "extension": [
                {"url": HEARTBEAT_EXTENSION, "valueUnsignedInt": record.heartbeat_seconds},
                {"url": TIMEOUT_EXTENSION, "valueUnsignedInt": record.timeout_seconds},
            ],
        },
    }
    if record.error:
        subscription["error"] = record.error
    del fhir_base
    return subscription


def matches(record: SubscriptionRecord, item: InboxItem) -> bool:
    """Whether an inbox message is an event of this subscription (its filter, if any)."""
    return not record.message_types or message_type(type(item.message)) in record.message_types


def focus(item: InboxItem, fhir_base: str) -> str | None:
    """The resource an inbox message is about, as the gateway serves it.

    A referral event's Task, a care-team change's CareTeam, a plan's CarePlan, a screening
    flag's DetectedIssue, an alert's Flag; ``None`` for a message no resource stands for.
    """
    path = _focus_path(item.message)
    return None if path is None else f"{fhir_base}/{path}"


def _focus_path(message: object) -> str | None:
    match message:
        case ReferralEvent(referral_id=referral_id):
            return f"Task/{uuid.uuid5(referral_fhir.RESOURCE_NAMESPACE, f'Task/{referral_id}')}"
        case CareTeamChanged(patient_ref=patient_ref):
            return f"CareTeam/{care.resource_id('CareTeam', patient_ref)}"
        case PlanUpdated(patient_ref=patient_ref, plan_clinic=plan_clinic):
            return f"CarePlan/{care.care_plan_id(patient_ref, plan_clinic)}"
        case ScreeningFlagged(flag_id=flag_id) | ScreeningDisputed(flag_id=flag_id):
            return f"DetectedIssue/{flag_id}"
        case AlertRaised(alert_id=alert_id) | AlertAcknowledged(alert_id=alert_id) | AlertResolved(alert_id=alert_id):
            return f"Flag/{alert_id}"
    return None


def status_parameters(
    record: SubscriptionRecord,
    fhir_base: str,
    kind: str,
    events: Sequence[tuple[InboxItem, datetime]] = (),
    events_since_start: int | None = None,
) -> dict[str, Any]:
    """The SubscriptionStatus ``Parameters`` of a notification: its type, count and events."""
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{fhir_base}/Subscription/{record.id}"}},
        {"name": "topic", "valueCanonical": TOPIC_URL},
        {"name": "status", "valueCode": record.status},
        {"name": "type", "valueCode": kind},
        {
            "name": "events-since-subscription-start",
            "valueString": str(record.events_since_start if events_since_start is None else events_since_start),
        },
    ]
    for item, at in events:
        parts: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": str(item.event_number)},
            {"name": "timestamp", "valueInstant": at.isoformat()},
        ]
        target = focus(item, fhir_base)
        if target is not None:
            parts.append({"name": "focus", "valueReference": {"reference": target}})
        parts.append({"name": "additional-context", "valueReference": {"display": message_type(type(item.message))}})
        parameters.append({"name": "notification-event", "part": parts})
    if record.error:
        parameters.append({"name": "error", "valueCodeableConcept": {"text": record.error}})
    return {"resourceType": "Parameters", "meta": {"profile": [STATUS_PROFILE]}, "parameter": parameters}


def notification(  # noqa: PLR0913 - the parts of one Bundle, all but the first four optional
    record: SubscriptionRecord,
    fhir_base: str,
    kind: str,
    now: datetime,
    *,
    events: Sequence[tuple[InboxItem, datetime]] = (),
    resources: Mapping[str, dict[str, Any]] | None = None,
    events_since_start: int | None = None,
) -> dict[str, Any]:
    """A notification Bundle (type ``history``): the status first, then the focus resources.

    ``resources`` (focus URL to resource) are included for ``full-resource`` payloads; an
    ``id-only`` payload lists the focus URLs as entries without a resource; ``empty`` has none.
    """
    status = status_parameters(record, fhir_base, kind, events, events_since_start)
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": _status_url(record, kind, events),
            "resource": status,
            "request": {"method": "GET", "url": f"Subscription/{record.id}/$status"},
            "response": {"status": "200"},
        }
    ]
    if record.payload != "empty":
        for item, _ in events:
            target = focus(item, fhir_base)
            if target is None:
                continue
            entry: dict[str, Any] = {
                "fullUrl": target,
                "request": {"method": "PUT", "url": target.removeprefix(f"{fhir_base}/")},
                "response": {"status": "200"},
            }
            if record.payload == "full-resource" and resources and target in resources:
                entry["resource"] = resources[target]
            entries.append(entry)
    return {"resourceType": "Bundle", "type": "history", "timestamp": now.isoformat(), "entry": entries}


def _status_url(record: SubscriptionRecord, kind: str, events: Sequence[tuple[InboxItem, datetime]]) -> str:
    """The status entry's ``fullUrl``: the same for every sending of one event's notification.

    Delivery is at least once, so a receiver may get an event's notification twice; its
    Bundle is then the same apart from ``Bundle.timestamp`` (when it was assembled).
    """
    if kind != "event-notification" or not events:
        return f"urn:uuid:{uuid.uuid4()}"
    numbers = ",".join(str(item.event_number) for item, _ in events)
    return f"urn:uuid:{uuid.uuid5(STATUS_NAMESPACE, f'{record.id}/{numbers}')}"


def backoff(failures: int) -> float:
    """Seconds before the next attempt after ``failures`` consecutive failures."""
    return float(min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** max(0, failures - 1)))


def after_failure(record: SubscriptionRecord, now: float) -> SubscriptionRecord:
    """One more failure: ``error``, retried after a back-off capped at :data:`MAX_BACKOFF_SECONDS`.

    Never ``off`` by itself: a receiver down for a day gets everything it missed, in order,
    once it answers again; only its clinic turns a subscription off.
    """
    failures = record.failures + 1
    status = "requested" if record.status == "requested" else "error"
    return msgspec.structs.replace(
        record, failures=failures, status=status, error=DELIVERY_FAILED, retry_at=now + backoff(failures)
    )


def status_bundle(records: Sequence[SubscriptionRecord], fhir_base: str, now: datetime) -> dict[str, Any]:
    """``$status``: a ``searchset`` Bundle of one SubscriptionStatus (``query-status``) per subscription."""
    entries = [
        {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "resource": status_parameters(record, fhir_base, "query-status"),
            "search": {"mode": "match"},
        }
        for record in records
    ]
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": now.isoformat(),
        "total": len(entries),
        "entry": entries,
    }


def events_range(parameters: Mapping[str, Sequence[str]], record: SubscriptionRecord, last: int) -> tuple[int, int]:
    """``eventsSinceNumber`` and ``eventsUntilNumber`` of ``$events`` (inclusive).

    Within the subscription's life (above ``start_after``) and the inbox's ``last`` number,
    delivered or not: a clinic whose receiver was ``off`` catches up here too.
    """
    try:
        since = int((parameters.get("eventsSinceNumber") or [str(record.start_after + 1)])[0])
        until = int((parameters.get("eventsUntilNumber") or [str(last)])[0])
    except ValueError as exc:
        msg = "eventsSinceNumber and eventsUntilNumber are integers"
        raise FhirError(400, RejectionCode.MALFORMED_JSON, msg) from exc
    since = max(since, record.start_after + 1)
    return since, min(until, last, since + MAX_EVENTS_PER_QUERY - 1)
