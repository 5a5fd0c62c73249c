"""Subscription (R4 backport): rest-hook subscriptions to the clinic inbox topic, $status and $events."""

from __future__ import annotations

import re
import uuid
from typing import Any, Final

import msgspec
import structlog
from litestar import Request, Response, delete, get, post, put
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from referral_hub.contracts.rejections import RejectionCode
from referral_hub.gateway import outcomes, subscriptions
from referral_hub.gateway.outcomes import FhirError, GatewayCode
from referral_hub.gateway.rest_hooks import focus_resources
from referral_hub.gateway.subscriptions import SubscriptionRecord
from referral_hub.gateway.web import Gateway, fhir, gateway_of, json_body
from referral_hub.runtime.jetstream import topology

log = structlog.get_logger(__name__)
_ID: Final = re.compile(r"[A-Za-z0-9-]{1,64}")
"""A FHIR id; anything else names no subscription (and is never used as a key)."""


# --- Subscriptions -----------------------------------------------------------------------------


async def _subscription(gateway: Gateway, clinic: str, subscription_id: str) -> tuple[SubscriptionRecord, int]:
    """A subscription of this clinic and its revision; another clinic's is 404."""
    bucket = gateway.store.buckets[topology.GATEWAY_SUBSCRIPTIONS_KV]
    try:
        entry = await bucket.get(subscriptions.key(subscription_id)) if _ID.fullmatch(subscription_id) else None
    except (KeyNotFoundError, ValueError):
        entry = None
    record = msgspec.json.decode(entry.value, type=SubscriptionRecord) if entry and entry.value else None
    if record is None or record.clinic != clinic or entry is None:
        raise outcomes.not_found("Subscription", subscription_id)  # noqa: EM101 - the resource's name, not a message
    return record, entry.revision or 0


def subscription_response(gateway: Gateway, record: SubscriptionRecord, status: int = 200) -> Response[bytes]:
    """A Subscription with its ETag."""
    return fhir(
        subscriptions.resource(record, gateway.settings.fhir_base), status, {"ETag": outcomes.etag(record.version)}
    )


@post("/fhir/Subscription", status_code=201)
async def create_subscription(request: Request[Any, Any, Any]) -> Response[bytes]:
    """A rest-hook subscription to the clinic's inbox topic; delivery starts with a handshake."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Subscription", "c")
    body = await json_body(request)
    if not isinstance(body, dict):
        raise FhirError(400, RejectionCode.MALFORMED_JSON, "the body must be a Subscription")
    allow_private = gateway.settings.allow_private_hook_endpoints
    subscriptions.parse(body, grant.clinic, "check", 0, allow_private=allow_private)  # refused before any I/O
    link = await gateway.connections.link(grant.clinic)
    async with gateway.subscribing:
        held = sum(1 for known in gateway.deliverer.view.values() if known.clinic == grant.clinic)
        if held >= subscriptions.MAX_PER_CLINIC:
            msg = f"a clinic holds at most {subscriptions.MAX_PER_CLINIC} subscriptions; delete one first"
            raise FhirError(422, GatewayCode.QUOTA_EXCEEDED, msg)
        start_after = await link.client.last_event_number()
        record = subscriptions.parse(body, grant.clinic, str(uuid.uuid4()), start_after, allow_private=allow_private)
        bucket = gateway.store.buckets[topology.GATEWAY_SUBSCRIPTIONS_KV]
        await bucket.create(subscriptions.key(record.id), msgspec.json.encode(record))
        gateway.deliverer.kick(record)
    log.info("gateway_subscription_created", clinic=grant.clinic, subscription=record.id, start_after=start_after)
    created = subscription_response(gateway, record, 201)
    created.headers["Location"] = f"{gateway.settings.fhir_base}/Subscription/{record.id}"
    return created


@get("/fhir/Subscription/{subscription_id:str}")
async def read_subscription(request: Request[Any, Any, Any], subscription_id: str) -> Response[bytes]:
    """One of the clinic's subscriptions, with its status (``requested``, ``active``, ``error``, ``off``)."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Subscription", "r")
    record, _ = await _subscription(gateway, grant.clinic, subscription_id)
    return subscription_response(gateway, record)


@put("/fhir/Subscription/{subscription_id:str}")
async def update_subscription(request: Request[Any, Any, Any], subscription_id: str) -> Response[bytes]:
    """Change a subscription; ``status`` ``off`` stops it, ``requested`` (or ``active``) starts it again.

    A restarted subscription carries on from the last event delivered, after a new handshake.
    """
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Subscription", "u")
    body = await json_body(request)
    record, revision = await _subscription(gateway, grant.clinic, subscription_id)
    outcomes.check_if_match(request.headers.get("if-match"), record.version)
    if not isinstance(body, dict):
        raise FhirError(400, RejectionCode.MALFORMED_JSON, "the body must be a Subscription")
    changed = subscriptions.parse(
        body, grant.clinic, record.id, record.start_after, allow_private=gateway.settings.allow_private_hook_endpoints
    )
    wanted = body.get("status")
    if wanted not in {"requested", "active", "off"}:
        raise FhirError(422, RejectionCode.SCHEMA_VIOLATION, "status must be requested, active or off")
    restart = wanted != "off" and record.status in {"off", "error"}
    updated = msgspec.structs.replace(
        record,
        endpoint=changed.endpoint,
        headers=changed.headers,
        payload=changed.payload,
        message_types=changed.message_types,
        heartbeat_seconds=changed.heartbeat_seconds,
        timeout_seconds=changed.timeout_seconds,
        reason=changed.reason,
        status="off" if wanted == "off" else ("requested" if restart else record.status),
        failures=0 if restart else record.failures,
        retry_at=0.0 if restart else record.retry_at,
        error="" if restart else record.error,
        version=record.version + 1,
    )
    bucket = gateway.store.buckets[topology.GATEWAY_SUBSCRIPTIONS_KV]
    try:
        await bucket.update(subscriptions.key(record.id), msgspec.json.encode(updated), last=revision)
    except KeyWrongLastSequenceError as exc:
        raise FhirError(412, GatewayCode.STALE_VERSION, "the subscription changed meanwhile; read it again") from exc
    gateway.deliverer.kick(updated)
    return subscription_response(gateway, updated)


@delete("/fhir/Subscription/{subscription_id:str}", status_code=200)
async def delete_subscription(request: Request[Any, Any, Any], subscription_id: str) -> Response[bytes]:
    """Stop and forget a subscription."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Subscription", "d")
    record, _ = await _subscription(gateway, grant.clinic, subscription_id)
    await gateway.store.buckets[topology.GATEWAY_SUBSCRIPTIONS_KV].delete(subscriptions.key(record.id))
    deleted = {"severity": "information", "code": "informational", "diagnostics": f"Subscription/{record.id} deleted"}
    return fhir({"resourceType": "OperationOutcome", "issue": [deleted]})


@get("/fhir/Subscription/{subscription_id:str}/$status")
async def subscription_status(request: Request[Any, Any, Any], subscription_id: str) -> Response[bytes]:
    """``$status``: where delivery stands, a ``searchset`` Bundle of one ``query-status``."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Subscription", "r")
    record, _ = await _subscription(gateway, grant.clinic, subscription_id)
    return fhir(subscriptions.status_bundle([record], gateway.settings.fhir_base, gateway.clock()))


@get("/fhir/Subscription/$status")
async def subscriptions_status(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Type-level ``$status``: the clinic's subscriptions named by ``id`` (all of them without one).

    An ``id`` that is not one of this clinic's subscriptions (another clinic's, none at all,
    or not an id) is 404, as a read of it is.
    """
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Subscription", "r")
    wanted = [part for value in request.query_params.getall("id", []) for part in value.split(",")]
    if not wanted:
        wanted = sorted(known.id for known in gateway.deliverer.view.values() if known.clinic == grant.clinic)
    records = [(await _subscription(gateway, grant.clinic, subscription_id))[0] for subscription_id in wanted]
    return fhir(subscriptions.status_bundle(records, gateway.settings.fhir_base, gateway.clock()))


@get("/fhir/Subscription/{subscription_id:str}/$events")
async def subscription_events(request: Request[Any, Any, Any], subscription_id: str) -> Response[bytes]:
    """``$events?eventsSinceNumber=N&eventsUntilNumber=M``: the events in that range again, from the inbox."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Subscription", "r")
    record, _ = await _subscription(gateway, grant.clinic, subscription_id)
    parameters = {name: request.query_params.getall(name) for name in request.query_params}
    link = await gateway.connections.link(grant.clinic)
    since, until = subscriptions.events_range(parameters, record, link.referrals.last_event_number)
    items = []
    if since <= until:
        async for item in link.client.inbox(since=since):
            if item.event_number > until:
                break
            if subscriptions.matches(record, item):
                items.append(item)
    resources = focus_resources(link, items, gateway.settings.fhir_base) if record.payload == "full-resource" else None
    bundle = subscriptions.notification(
        record,
        gateway.settings.fhir_base,
        "query-event",
        gateway.clock(),
        events=[(item, item.message.occurred_at) for item in items],
        resources=resources,
    )
    return fhir(bundle)


HANDLERS: Final = (
    create_subscription,
    read_subscription,
    update_subscription,
    delete_subscription,
    subscriptions_status,
    subscription_status,
    subscription_events,
)
