"""The clinic gateway's wiring: a Litestar app serving FHIR R4 under ``/fhir`` and SMART's ``/auth/token``.

Handlers are thin: they verify the bearer token, check its scope, parse the FHIR JSON, call
the pure mapping (``domain``) and act as the token's clinic through that clinic's own NATS
connection (``adapters``). Every refusal leaves as an ``OperationOutcome``.

Litestar because it decodes and encodes with msgspec (the hub's contracts are msgspec
Structs) and is an actively kept ASGI framework; uvicorn serves it, with TLS when the hub's
certificate files are configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import msgspec
import nats.errors
import structlog
import uvicorn
from joserfc.jwk import ECKey
from litestar import Litestar, Request, Response, delete, get, patch, post, put
from litestar.exceptions import HTTPException
from nats.js.api import ObjectMeta
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, ObjectNotFoundError

from referral_hub.audit.fhir import to_audit_event
from referral_hub.contracts.access import AccessViewed
from referral_hub.contracts.referrals import ReferralRequested
from referral_hub.contracts.rejections import Rejection, RejectionCode
from referral_hub.errors import HubError
from referral_hub.gateway import auth, care, domain, subscriptions
from referral_hub.gateway.adapters import AuditSearch, ClinicConnections, ClinicLink, GatewayStore, ReplayError
from referral_hub.gateway.delivery import Deliverer, focus_resources
from referral_hub.gateway.domain import Envelope, FhirError, GatewayCode, TaskView
from referral_hub.gateway.subscriptions import SubscriptionRecord
from referral_hub.runtime import topology
from referral_hub.runtime.kvstore import KvView

log = structlog.get_logger(__name__)
FHIR_JSON: Final = "application/fhir+json"
MAX_BODY_BYTES: Final = 1024 * 1024
"""The largest FHIR JSON body accepted (documents have their own, larger limit)."""
DEFAULT_PORT: Final = 8490


@dataclass(frozen=True)
class GatewaySettings:
    """Where the gateway listens, how it is reached, and where NATS is."""

    nats_url: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    public_url: str = ""
    """The base URL clients use (it is the token's audience); default ``http(s)://host:port``."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    audit_index: Path | None = None
    """Where the index of the clinic-own AuditEvent search lives; ``None``: AuditEvent is not served.

    Set, the gateway also holds the hub's read-only ``auditor`` key (see docs/gateway.md)."""

    @property
    def base(self) -> str:
        """The public base URL, without a trailing slash."""
        scheme = "https" if self.tls_cert else "http"
        return (self.public_url or f"{scheme}://{self.host}:{self.port}").rstrip("/")

    @property
    def token_url(self) -> str:
        """The token endpoint's URL: the audience every client assertion must name."""
        return f"{self.base}/auth/token"

    @property
    def fhir_base(self) -> str:
        """The FHIR base URL."""
        return f"{self.base}/fhir"


def utc_now() -> datetime:
    """Now, timezone-aware."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Started:
    """What :meth:`Gateway.start` connects and loads: the buckets, the token key, the deliverer."""

    store: GatewayStore
    key: ECKey
    deliverer: Deliverer
    tokens: auth.VerifiedTokens
    clients: KvView[auth.ClientRecord]
    audit: AuditSearch | None = None


class Gateway:
    """What the handlers share: the store, the clinic connections and the token key."""

    def __init__(self, settings: GatewaySettings, clock: Callable[[], datetime] = utc_now) -> None:
        """Nothing connects until :meth:`start`."""
        self.settings = settings
        self.clock = clock
        self.connections = ClinicConnections(settings.nats_url)
        self._started: Started | None = None
        self._delivering: asyncio.Task[None] | None = None
        self._following: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect as the ``gateway`` user, load (or, first of all replicas, make) the token key, start delivering."""
        store = await GatewayStore.open(self.settings.nats_url)
        try:
            key = auth.signing_key(await store.signing_key(auth.new_signing_key))
        except BaseException:
            with contextlib.suppress(Exception):
                await store.close()
            raise
        deliverer = Deliverer(
            store.buckets[topology.GATEWAY_SUBSCRIPTIONS_KV], self.connections, self.settings.fhir_base
        )
        audit = None
        if self.settings.audit_index is not None:
            try:
                audit = await AuditSearch.open(self.settings.nats_url, self.settings.audit_index)
            except BaseException:
                with contextlib.suppress(Exception):
                    await store.close()
                raise
        tokens = auth.VerifiedTokens(key, self.settings.base, self.clock)
        clients: KvView[auth.ClientRecord] = KvView(auth.ClientRecord)
        self._started = Started(store, key, deliverer, tokens, clients, audit)
        self._delivering = asyncio.create_task(deliverer.run(), name="gateway-delivery")
        self._following = asyncio.create_task(
            clients.follow(store.buckets[topology.GATEWAY_CLIENTS_KV]), name="gateway-clients-watch"
        )

    async def stop(self) -> None:
        """Stop delivering and close every connection."""
        for task in (self._delivering, self._following):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.connections.close()
        if self._started is not None:
            with contextlib.suppress(Exception):
                await self._started.store.close()
            if self._started.audit is not None:
                await self._started.audit.close()

    @property
    def started(self) -> Started:
        """The buckets, token key and deliverer (after :meth:`start`)."""
        if self._started is None:
            msg = "the gateway has not started"
            raise HubError(msg)
        return self._started

    @property
    def store(self) -> GatewayStore:
        """The gateway's buckets (after :meth:`start`)."""
        return self.started.store

    @property
    def key(self) -> ECKey:
        """The token key (after :meth:`start`)."""
        return self.started.key

    @property
    def deliverer(self) -> Deliverer:
        """The rest-hook deliverer (after :meth:`start`)."""
        return self.started.deliverer

    def grant(self, request: Request[Any, Any, Any], resource: str, permission: str) -> auth.Grant:
        """The request's verified grant, refused unless it allows ``permission`` on ``resource``."""
        grant = self.started.tokens.grant(request.headers.get("authorization"))
        domain.require_scope(grant.scopes, resource, permission)
        return grant

    async def envelope(self, clinic: str) -> Envelope:
        """The sender fields of a command this clinic sends now."""
        # The watched copy of the clients bucket, read without a round trip; a clinic not in it
        # (registered a moment ago, or removed) is looked up in the bucket itself, and so is
        # every clinic once the watch has stopped (its copy would no longer see a removal).
        watching = self._following is not None and not self._following.done()
        client = (self.started.clients.get(clinic) if watching else None) or await self.store.client(clinic)
        if client is None:
            raise FhirError(401, GatewayCode.INVALID_TOKEN, "the token's clinic has no registered client")
        return Envelope(clinic, client.actor, self.clock())


def gateway_of(request: Request[Any, Any, Any]) -> Gateway:
    """The app's :class:`Gateway`."""
    gateway: Gateway = request.app.state.gateway
    return gateway


def fhir(content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response[bytes]:  # noqa: ANN401 - FHIR JSON
    """A FHIR JSON response."""
    return Response(msgspec.json.encode(content), status_code=status, media_type=FHIR_JSON, headers=dict(headers or {}))


async def json_body(request: Request[Any, Any, Any]) -> Any:  # noqa: ANN401 - FHIR JSON
    """The request's JSON body; 400 when it is not JSON."""
    raw = await request.body()
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise FhirError(400, RejectionCode.MALFORMED_JSON, f"the body is not JSON: {exc}") from exc


def task_response(view: TaskView, status: int = 200, base: str = "") -> Response[bytes]:
    """A Task with its ETag (and Location, when created)."""
    task = domain.task_resource(view)
    headers = {"ETag": domain.etag(view.version)}
    if status == 201:  # noqa: PLR2004 - HTTP status
        headers["Location"] = f"{base}/Task/{task['id']}/_history/{view.version}"
    return fhir(task, status, headers)


# --- Authentication --------------------------------------------------------------------------


@post("/auth/token", status_code=200)
async def token(request: Request[Any, Any, Any]) -> Response[bytes]:
    """SMART Backend Services: a signed client assertion for a short-lived bearer token."""
    gateway = gateway_of(request)
    form = await request.form()
    if form.get("grant_type") != "client_credentials":
        return _oauth_error(400, "unsupported_grant_type", "grant_type must be client_credentials")
    if form.get("client_assertion_type") != auth.ASSERTION_TYPE:
        return _oauth_error(400, "invalid_request", f"client_assertion_type must be {auth.ASSERTION_TYPE}")
    assertion = str(form.get("client_assertion") or "")
    try:
        clinic = auth.unverified_issuer(assertion)
        client = await gateway.store.client(clinic)
        if client is None:
            return _oauth_error(401, "invalid_client", "no client is registered under this iss")
        checked = auth.verify_assertion(assertion, client, gateway.settings.token_url, gateway.clock())
        await gateway.store.spend_jti(checked.clinic, checked.jti)
        scopes = domain.granted_scopes(str(form.get("scope") or ""))
    except FhirError as exc:
        return _oauth_error(exc.status, "invalid_client" if exc.status == 401 else "invalid_scope", exc.diagnostics)  # noqa: PLR2004 - HTTP status
    except ReplayError as exc:
        return _oauth_error(401, "invalid_client", str(exc))
    bearer = auth.issue_token(gateway.key, gateway.settings.base, checked.clinic, scopes, gateway.clock())
    log.info("gateway_token_issued", clinic=checked.clinic)
    body = {
        "access_token": bearer,
        "token_type": "bearer",
        "expires_in": int(auth.TOKEN_LIFETIME.total_seconds()),
        "scope": " ".join(scopes),
    }
    return Response(
        msgspec.json.encode(body), status_code=200, media_type="application/json", headers={"Cache-Control": "no-store"}
    )


def _oauth_error(status: int, error: str, description: str) -> Response[bytes]:
    log.info("gateway_token_refused", error=error, reason=description)
    return Response(
        msgspec.json.encode({"error": error, "error_description": description}),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


@get("/health")
async def health() -> Response[bytes]:
    """Readiness for ``hubctl up`` and load balancers: the app started (its store is open)."""
    return Response(b"ok", media_type="text/plain")


# --- Capability ------------------------------------------------------------------------------


@get("/fhir/metadata")
async def metadata(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The CapabilityStatement: exactly the resources and interactions served."""
    gateway = gateway_of(request)
    return fhir(capability_statement(gateway.settings))


def capability_statement(settings: GatewaySettings) -> dict[str, Any]:
    """What this gateway serves, for ``GET /fhir/metadata``."""
    search = [
        {"name": name, "type": kind}
        for name, kind in (
            ("owner", "reference"),
            ("requester", "reference"),
            ("status", "token"),
            ("patient", "reference"),
            ("identifier", "token"),
            ("_lastUpdated", "date"),
        )
    ]
    care_search = [{"name": "patient", "type": "reference"}, {"name": "subject", "type": "reference"}]
    audit_events = (
        [
            {
                "type": "AuditEvent",
                "interaction": [{"code": "search-type"}],
                "searchParam": [{"name": "date", "type": "date"}],
            }
        ]
        if settings.audit_index is not None
        else []
    )
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-28",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "instantiates": [
            "http://hl7.org/fhir/uv/subscriptions-backport/CapabilityStatement/backport-subscription-server-r4"
        ],
        "format": ["json"],
        "implementation": {"description": "Referral hub clinic gateway", "url": settings.fhir_base},
        "rest": [
            {
                "mode": "server",
                "security": {
                    "service": [
                        {
                            "coding": [
                                {"system": "http://hl7.org/fhir/restful-security-service", "code": "SMART-on-FHIR"}
                            ]
                        }
                    ],
                    "extension": [
                        {
                            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                            "extension": [{"url": "token", "valueUri": settings.token_url}],
                        }
                    ],
                },
                "resource": [
                    {
                        "type": "Task",
                        "versioning": "versioned-update",
                        "conditionalCreate": True,
                        "interaction": [
                            {"code": code} for code in ("read", "create", "update", "patch", "search-type")
                        ],
                        "searchParam": search,
                    },
                    {"type": "ServiceRequest", "interaction": [{"code": "read"}]},
                    {"type": "DocumentReference", "interaction": [{"code": "create"}, {"code": "read"}]},
                    {"type": "Binary", "interaction": [{"code": "read"}]},
                    {
                        "type": "Communication",
                        "interaction": [{"code": "create"}, {"code": "search-type"}],
                        "searchParam": [{"name": "based-on", "type": "reference"}],
                    },
                    {
                        "type": "Subscription",
                        "interaction": [{"code": code} for code in ("read", "create", "update", "delete")],
                        "operation": [
                            {
                                "name": "status",
                                "definition": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status",
                            },
                            {
                                "name": "events",
                                "definition": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-events",
                            },
                        ],
                    },
                    {
                        "type": "CarePlan",
                        "versioning": "versioned-update",
                        "updateCreate": True,
                        "interaction": [{"code": code} for code in ("read", "create", "update", "search-type")],
                        "searchParam": care_search,
                    },
                    {
                        "type": "CareTeam",
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "searchParam": care_search,
                    },
                    {
                        "type": "Flag",
                        "versioning": "versioned-update",
                        "interaction": [
                            {"code": code} for code in ("read", "create", "update", "patch", "search-type")
                        ],
                        "searchParam": care_search,
                    },
                    {
                        "type": "DetectedIssue",
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "searchParam": care_search[:1],
                    },
                    *audit_events,
                ],
                "interaction": [{"code": "transaction"}],
            }
        ],
    }


# --- Task ------------------------------------------------------------------------------------


async def _create(
    gateway: Gateway,
    clinic: str,
    task: dict[str, Any],
    service_request: dict[str, Any] | None,
    if_none_exist: str | None,
) -> Response[bytes]:
    """Create a referral, or answer with the one this identifier already made."""
    envelope = await gateway.envelope(clinic)
    command = domain.referral_request(envelope, task, service_request)
    if if_none_exist is not None:
        _check_if_none_exist(if_none_exist, task)
    link = await gateway.connections.link(clinic)
    existing = link.referrals.by_referral.get(command.referral_id)
    if existing is not None:
        return task_response(existing, 200)
    answer = await link.send_and_wait(command)
    if answer is None and not await link.wait_until(lambda: command.referral_id in link.referrals.by_referral):
        raise FhirError(503, GatewayCode.HUB_UNAVAILABLE, "the referral was stored but not yet confirmed; retry")
    if answer is not None and isinstance(answer.message, Rejection):
        raise domain.from_rejection(answer.message)
    if answer is not None and not isinstance(answer.message, ReferralRequested):
        raise FhirError(500, RejectionCode.PROCESSING_FAILED, "the hub answered with an unexpected message")
    view = link.referrals.by_referral[command.referral_id]
    return task_response(view, 201, gateway.settings.fhir_base)


def _check_if_none_exist(header: str, task: Mapping[str, Any]) -> None:
    """``If-None-Exist`` must search by the Task's own identifier (the one the referral id comes from)."""
    name, _, value = header.partition("=")
    if name.strip() != "identifier":
        raise FhirError(422, GatewayCode.UNSUPPORTED, "If-None-Exist supports identifier=system|value only")
    system, code = domain.parse_token_search(value.strip())
    first = (task.get("identifier") or [{}])[0]
    if code != first.get("value") or (system and system != first.get("system")):
        raise FhirError(422, GatewayCode.UNSUPPORTED, "If-None-Exist must name the Task's first identifier")


@post("/fhir/Task", status_code=201)
async def create_task(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``POST /fhir/Task``: a new referral; with ``If-None-Exist``, a retry makes no second one."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Task", "c")
    body = await json_body(request)
    if not isinstance(body, dict):
        raise FhirError(400, RejectionCode.MALFORMED_JSON, "the body must be a JSON object")
    return await _create(gateway, grant.clinic, body, None, request.headers.get("if-none-exist"))


@post("/fhir", status_code=200)
async def transaction(request: Request[Any, Any, Any]) -> Response[bytes]:
    """A transaction Bundle of a ServiceRequest and a Task: one referral."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Task", "c")
    body = await json_body(request)
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise FhirError(422, RejectionCode.SCHEMA_VIOLATION, "the base URL accepts a transaction Bundle")
    task, service_request = domain.transaction_parts(body)
    created = await _create(gateway, grant.clinic, task, service_request, None)
    resource = msgspec.json.decode(created.content) if isinstance(created.content, bytes) else {}
    status = f"{created.status_code} {'Created' if created.status_code == 201 else 'OK'}"  # noqa: PLR2004 - HTTP status
    entry = {"response": {"status": status, "location": f"Task/{resource.get('id')}"}, "resource": resource}
    service_entry = {"response": {"status": status}}
    return fhir({"resourceType": "Bundle", "type": "transaction-response", "entry": [service_entry, entry]})


async def _caught_up(link: ClinicLink) -> ClinicLink:
    """The link, once its folded view holds everything the clinic's inbox held when asked."""
    newest = await link.client.last_event_number()
    await link.wait_until(lambda: link.referrals.last_event_number >= newest, 5.0)
    return link


async def _view(gateway: Gateway, clinic: str, task_id: str) -> tuple[ClinicLink, TaskView]:
    """The clinic's Task, as of everything its inbox held when the request came.

    The folded view follows the inbox a moment behind; before answering 404 it catches up
    to the inbox's newest number, so a Task whose event is already stored is always found.
    """
    link = await gateway.connections.link(clinic)
    view = link.referrals.task(task_id)
    if view is None:
        await _caught_up(link)
        view = link.referrals.task(task_id)
    if view is None:
        raise domain.not_found("Task", task_id)  # noqa: EM101 - the resource's name, not a message
    return link, view


@get("/fhir/Task/{task_id:str}")
async def read_task(request: Request[Any, Any, Any], task_id: str) -> Response[bytes]:
    """One Task of the token's clinic; another clinic's is 404, exactly like a missing one."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Task", "r")
    _, view = await _view(gateway, grant.clinic, task_id)
    return task_response(view)


@get("/fhir/ServiceRequest/{resource_id:str}")
async def read_service_request(request: Request[Any, Any, Any], resource_id: str) -> Response[bytes]:
    """The ServiceRequest of one of the clinic's referrals."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "ServiceRequest", "r")
    link = await gateway.connections.link(grant.clinic)
    for view in link.referrals.by_referral.values():
        resource = domain.service_request_resource(view)
        if resource["id"] == resource_id:
            return fhir(resource, headers={"ETag": domain.etag(view.version)})
    raise domain.not_found("ServiceRequest", resource_id)  # noqa: EM101 - the resource's name, not a message


@get("/fhir/Task")
async def search_task(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Search the clinic's Tasks by owner, requester, status, patient, identifier and ``_lastUpdated``."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Task", "s")
    parameters = {name: request.query_params.getall(name) for name in request.query_params}
    link = await _caught_up(await gateway.connections.link(grant.clinic))
    found = domain.search_tasks(list(link.referrals.by_referral.values()), parameters)
    offset, count = domain.page_bounds(parameters)
    page = found[offset : offset + count]
    base = f"{gateway.settings.fhir_base}/Task"
    plain = {k: v for k, v in parameters.items() if k not in {"_offset", "_count"}}

    def link_to(start: int) -> str:
        return f"{base}?{urlencode({**plain, '_count': [str(count)], '_offset': [str(start)]}, doseq=True)}"

    links = {"self": link_to(offset)}
    if offset + count < len(found):
        links["next"] = link_to(offset + count)
    if offset > 0:
        links["previous"] = link_to(max(0, offset - count))
    return fhir(
        domain.searchset(gateway.settings.fhir_base, [domain.task_resource(v) for v in page], len(found), links)
    )


async def _transition(request: Request[Any, Any, Any], task_id: str, *, patching: bool) -> Response[bytes]:
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Task", "u")
    body = await json_body(request)
    link, view = await _view(gateway, grant.clinic, task_id)
    domain.check_if_match(request.headers.get("if-match"), view.version)
    current = domain.task_resource(view)
    if patching:
        wanted = domain.apply_patch(current, body)
    elif isinstance(body, dict):
        wanted = body
        if body.get("id") not in {None, task_id}:
            raise FhirError(400, RejectionCode.SCHEMA_VIOLATION, "the Task's id differs from the URL's")
    else:
        raise FhirError(400, RejectionCode.MALFORMED_JSON, "the body must be a Task")
    transition = domain.transition_for(current, wanted, grant.clinic, view)
    command = domain.transition_command(transition, await gateway.envelope(grant.clinic), view, wanted)
    answer = await link.send_and_wait(command)
    if answer is not None and isinstance(answer.message, Rejection):
        raise domain.from_rejection(answer.message)
    updated = link.referrals.by_referral.get(view.referral.referral_id)
    if updated is None:
        # Forwarded away: the referral is no longer this clinic's to read.
        return fhir(domain.task_resource(view))
    return task_response(updated)


@put("/fhir/Task/{task_id:str}")
async def update_task(request: Request[Any, Any, Any], task_id: str) -> Response[bytes]:
    """A new status or businessStatus is a lifecycle transition; ``If-Match`` guards the version."""
    return await _transition(request, task_id, patching=False)


@patch("/fhir/Task/{task_id:str}")
async def patch_task(request: Request[Any, Any, Any], task_id: str) -> Response[bytes]:
    """The same, as a JSON Patch of the Task."""
    return await _transition(request, task_id, patching=True)


# --- Communication ---------------------------------------------------------------------------


@post("/fhir/Communication", status_code=201)
async def create_communication(request: Request[Any, Any, Any]) -> Response[bytes]:
    """An interim consult note about one of the clinic's referrals (``referral.interim_note``)."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Communication", "c")
    body = await json_body(request)
    if not isinstance(body, dict):
        raise FhirError(400, RejectionCode.MALFORMED_JSON, "the body must be a Communication")
    link, view = await _view(gateway, grant.clinic, domain.task_reference(body))
    command = domain.interim_note(await gateway.envelope(grant.clinic), view, body)
    answer = await link.send_and_wait(command)
    if answer is not None and isinstance(answer.message, Rejection):
        raise domain.from_rejection(answer.message)
    current = link.referrals.by_referral.get(view.referral.referral_id, view)
    made = (
        next(
            (c for c in domain.communications(current) if c["sent"] == answer.message.occurred_at.isoformat()),
            None,
        )
        if answer is not None
        else None
    )
    return fhir(made or domain.communications(current)[-1], 201)


@get("/fhir/Communication")
async def search_communication(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The interim notes of the clinic's referrals, optionally ``based-on=Task/<id>``."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Communication", "s")
    link = await _caught_up(await gateway.connections.link(grant.clinic))
    based_on = request.query_params.get("based-on")
    unknown = set(request.query_params) - {"based-on"}
    if unknown:
        raise FhirError(400, GatewayCode.UNSUPPORTED, f"unsupported search parameters: {', '.join(sorted(unknown))}")
    views = list(link.referrals.by_referral.values())
    if based_on:
        chosen = link.referrals.task(based_on.rpartition("/")[2])
        views = [chosen] if chosen is not None else []
    found = [c for v in views for c in domain.communications(v)]
    links = {"self": f"{gateway.settings.fhir_base}/Communication"}
    return fhir(domain.searchset(gateway.settings.fhir_base, found, len(found), links))


# --- DocumentReference and Binary ------------------------------------------------------------

DOCUMENT_BODY_BYTES: Final = 28 * 1024 * 1024
"""A 20 MiB document as base64 in JSON, with room for the resource around it."""


async def _record_access(link: ClinicLink, envelope: Envelope, meta: domain.DocumentMeta, what: str) -> None:
    """Put the document's SHA-256 in the hub's audit log: an access record on the clinic's own out subject."""
    record = AccessViewed(
        message_id=uuid.uuid4(),
        occurred_at=envelope.now,
        sender_clinic=envelope.clinic,
        actor=envelope.actor,
        correlation_id=uuid.uuid4(),
        page=f"DocumentReference/{meta.id} {what} sha256:{meta.sha256}",
        referral_id=str(meta.referral_id),
        patient_ref=meta.patient_ref,
    )
    await link.client.send(record)


@post("/fhir/DocumentReference", status_code=201, request_max_body_size=DOCUMENT_BODY_BYTES)
async def create_document(request: Request[Any, Any, Any]) -> Response[bytes]:
    """A document (a referral letter, an imaging report) attached to one of the clinic's referrals."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "DocumentReference", "c")
    body = await json_body(request)
    if not isinstance(body, dict):
        raise FhirError(400, RejectionCode.MALFORMED_JSON, "the body must be a DocumentReference")
    upload = domain.document_upload(body, topology.GATEWAY_DOCUMENT_MAX_BYTES)
    link, view = await _view(gateway, grant.clinic, upload.task_id)
    envelope = await gateway.envelope(grant.clinic)
    meta = domain.DocumentMeta(
        id=str(uuid.uuid4()),
        referral_id=view.referral.referral_id,
        task_id=upload.task_id,
        patient_ref=view.referral.patient_ref,
        title=upload.title,
        content_type=upload.content_type,
        size=len(upload.data),
        sha256=hashlib.sha256(upload.data).hexdigest(),
        author=grant.clinic,
        created=envelope.now,
    )
    await gateway.store.documents.put(
        meta.id, upload.data, ObjectMeta(name=meta.id, description=msgspec.json.encode(meta).decode())
    )
    await _record_access(link, envelope, meta, "uploaded")
    log.info("gateway_document_stored", clinic=grant.clinic, document=meta.id, size=meta.size)
    return fhir(domain.document_resource(meta, gateway.settings.fhir_base), 201)


async def _document(gateway: Gateway, clinic: str, document_id: str) -> tuple[ClinicLink, domain.DocumentMeta]:
    """A stored document's metadata, if ``clinic`` is a party to its referral; else 404."""
    link = await gateway.connections.link(clinic)
    try:
        info = await gateway.store.documents.get_info(document_id)
        meta = msgspec.json.decode(info.description or "", type=domain.DocumentMeta)
    except (ObjectNotFoundError, msgspec.DecodeError, nats.errors.Error):
        meta = None
    if meta is None or meta.referral_id not in link.referrals.by_referral:
        raise domain.not_found("DocumentReference", document_id)  # noqa: EM101 - the resource's name, not a message
    return link, meta


@get("/fhir/DocumentReference/{document_id:str}")
async def read_document(request: Request[Any, Any, Any], document_id: str) -> Response[bytes]:
    """A document's metadata, for the referral's parties only."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "DocumentReference", "r")
    _, meta = await _document(gateway, grant.clinic, document_id)
    return fhir(domain.document_resource(meta, gateway.settings.fhir_base))


@get("/fhir/Binary/{document_id:str}")
async def read_binary(request: Request[Any, Any, Any], document_id: str) -> Response[bytes]:
    """A document's bytes, for the referral's parties only; the read is recorded in the audit log."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Binary", "r")
    link, meta = await _document(gateway, grant.clinic, document_id)
    stored = await gateway.store.documents.get(document_id)
    data = stored.data or b""
    if hashlib.sha256(data).hexdigest() != meta.sha256:
        raise FhirError(500, RejectionCode.PROCESSING_FAILED, "the stored document does not match its hash")
    await _record_access(link, await gateway.envelope(grant.clinic), meta, "read")
    return Response(data, media_type=meta.content_type, headers={"ETag": f'"{meta.sha256}"'})


# --- Subscriptions -----------------------------------------------------------------------------


async def _subscription(gateway: Gateway, clinic: str, subscription_id: str) -> tuple[SubscriptionRecord, int]:
    """A subscription of this clinic and its revision; another clinic's is 404."""
    bucket = gateway.store.buckets[topology.GATEWAY_SUBSCRIPTIONS_KV]
    try:
        entry = await bucket.get(subscriptions.key(subscription_id))
    except (KeyNotFoundError, ValueError):
        entry = None
    record = msgspec.json.decode(entry.value, type=SubscriptionRecord) if entry and entry.value else None
    if record is None or record.clinic != clinic or entry is None:
        raise domain.not_found("Subscription", subscription_id)  # noqa: EM101 - the resource's name, not a message
    return record, entry.revision or 0


def subscription_response(gateway: Gateway, record: SubscriptionRecord, status: int = 200) -> Response[bytes]:
    """A Subscription with its ETag."""
    return fhir(
        subscriptions.resource(record, gateway.settings.fhir_base), status, {"ETag": domain.etag(record.version)}
    )


@post("/fhir/Subscription", status_code=201)
async def create_subscription(request: Request[Any, Any, Any]) -> Response[bytes]:
    """A rest-hook subscription to the clinic's inbox topic; delivery starts with a handshake."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Subscription", "c")
    body = await json_body(request)
    if not isinstance(body, dict):
        raise FhirError(400, RejectionCode.MALFORMED_JSON, "the body must be a Subscription")
    link = await gateway.connections.link(grant.clinic)
    start_after = await link.client.last_event_number()
    record = subscriptions.parse(body, grant.clinic, str(uuid.uuid4()), start_after)
    bucket = gateway.store.buckets[topology.GATEWAY_SUBSCRIPTIONS_KV]
    await bucket.create(subscriptions.key(record.id), msgspec.json.encode(record))
    gateway.deliverer.kick(record)
    log.info("gateway_subscription_created", clinic=grant.clinic, subscription=record.id, start_after=start_after)
    return subscription_response(gateway, record, 201)


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
    domain.check_if_match(request.headers.get("if-match"), record.version)
    if not isinstance(body, dict):
        raise FhirError(400, RejectionCode.MALFORMED_JSON, "the body must be a Subscription")
    changed = subscriptions.parse(body, grant.clinic, record.id, record.start_after)
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
    """``$status``: where delivery stands, as a ``query-status`` Bundle."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Subscription", "r")
    record, _ = await _subscription(gateway, grant.clinic, subscription_id)
    return fhir(subscriptions.notification(record, gateway.settings.fhir_base, "query-status", gateway.clock()))


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


# --- Care team resources: CarePlan, CareTeam, Flag, DetectedIssue ----------------------------

PLAN_ANSWER_SECONDS: Final = 10.0
"""How long a ``plan.update`` waits for the hub's answer (its ``plan.updated`` or a refusal) before 503."""
CARE_SEARCH: Final = frozenset({"patient", "subject"})


def _parameters(request: Request[Any, Any, Any]) -> dict[str, list[str]]:
    return {name: request.query_params.getall(name) for name in request.query_params}


def _bundle(gateway: Gateway, kind: str, resources: list[dict[str, Any]]) -> Response[bytes]:
    links = {"self": f"{gateway.settings.fhir_base}/{kind}"}
    return fhir(domain.searchset(gateway.settings.fhir_base, resources, len(resources), links))


async def _care_link(gateway: Gateway, clinic: str) -> ClinicLink:
    """The clinic's link, caught up to its inbox's newest number (care reads are rarer than Task reads)."""
    return await _caught_up(await gateway.connections.link(clinic))


def _object(body: Any, kind: str) -> dict[str, Any]:  # noqa: ANN401 - FHIR JSON
    if not isinstance(body, dict):
        raise FhirError(400, RejectionCode.MALFORMED_JSON, f"the body must be a {kind}")
    return dict(body)


async def _send_plan(gateway: Gateway, clinic: str, body: dict[str, Any], version: int, status: int) -> Response[bytes]:
    """Send version ``version`` of the clinic's plan; success only once the hub confirms it stored it.

    The hub refuses a version that does not follow its own. Its ``plan.updated`` is folded
    into the clinic's view before the answer resolves, so the plan reads back at once.
    """
    command = care.plan_update(await gateway.envelope(clinic), body, version)
    link = await gateway.connections.link(clinic)
    answer = await link.send_and_watch(command, PLAN_ANSWER_SECONDS)
    stored = care.plan_confirmation(answer.message if answer is not None else None, PLAN_ANSWER_SECONDS)
    log.info("gateway_plan_stored", clinic=clinic, version=stored.plan_version)
    resource = care.care_plan_resource(stored, clinic)
    headers = {"ETag": domain.etag(version)}
    if status == 201:  # noqa: PLR2004 - HTTP status
        headers["Location"] = f"{gateway.settings.fhir_base}/CarePlan/{resource['id']}/_history/{version}"
    return fhir(resource, status, headers)


@post("/fhir/CarePlan", status_code=201)
async def create_care_plan(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The clinic's first plan for a patient on its care team (``plan.update`` version 1)."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "CarePlan", "c")
    body = _object(await json_body(request), "CarePlan")
    return await _send_plan(gateway, grant.clinic, body, 1, 201)


@put("/fhir/CarePlan/{plan_id:str}")
async def update_care_plan(request: Request[Any, Any, Any], plan_id: str) -> Response[bytes]:
    """A new version of the clinic's own plan; ``If-Match: W/"n"`` names the version it replaces.

    The hub holds the plan's version and refuses one that does not follow it, so a stale
    ``If-Match`` is 412 and nothing changes, however many replicas or clients race.
    """
    gateway = gateway_of(request)
    grant = gateway.grant(request, "CarePlan", "u")
    body = _object(await json_body(request), "CarePlan")
    replaces = care.if_match_version(request.headers.get("if-match"))
    command = care.plan_update(await gateway.envelope(grant.clinic), body, replaces + 1)
    if plan_id != care.care_plan_id(command.patient_ref, grant.clinic):
        msg = "a clinic updates only its own plan: the id is the one its CarePlan for this patient has"
        raise FhirError(422, RejectionCode.SCHEMA_VIOLATION, msg)
    return await _send_plan(gateway, grant.clinic, body, replaces + 1, 200 if replaces else 201)


@get("/fhir/CarePlan/{plan_id:str}")
async def read_care_plan(request: Request[Any, Any, Any], plan_id: str) -> Response[bytes]:
    """A care-team clinic's current plan (this clinic's own too), as its ``plan.updated`` reached this clinic."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "CarePlan", "r")
    link = await _care_link(gateway, grant.clinic)
    for plan in care.plans_of(link.care, None):
        resource = care.care_plan_resource(plan, plan.plan_clinic)
        if resource["id"] == plan_id:
            return fhir(resource, headers={"ETag": domain.etag(plan.plan_version)})
    raise domain.not_found("CarePlan", plan_id)  # noqa: EM101 - the resource's name, not a message


@get("/fhir/CarePlan")
async def search_care_plan(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The care team's plans this clinic was sent, ``patient=`` one patient."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "CarePlan", "s")
    patient = care.patient_parameter(_parameters(request), CARE_SEARCH)
    link = await _care_link(gateway, grant.clinic)
    plans = care.plans_of(link.care, patient)
    return _bundle(gateway, "CarePlan", [care.care_plan_resource(p, p.plan_clinic) for p in plans])


@get("/fhir/CareTeam")
async def search_care_team(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The care teams the clinic is on, ``patient=`` one patient; read only."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "CareTeam", "s")
    patient = care.patient_parameter(_parameters(request), CARE_SEARCH)
    link = await _care_link(gateway, grant.clinic)
    patients = [p for p in link.care.team_patients() if patient is None or p == patient]
    return _bundle(gateway, "CareTeam", [care.care_team_resource(link.care, p) for p in patients])


@get("/fhir/CareTeam/{team_id:str}")
async def read_care_team(request: Request[Any, Any, Any], team_id: str) -> Response[bytes]:
    """A patient's care team, if the clinic is on it; else 404, as for a patient it never heard of."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "CareTeam", "r")
    link = await _care_link(gateway, grant.clinic)
    for patient in link.care.team_patients():
        if care.resource_id("CareTeam", patient) == team_id:
            return fhir(care.care_team_resource(link.care, patient))
    raise domain.not_found("CareTeam", team_id)  # noqa: EM101 - the resource's name, not a message


def _flag_response(view: care.AlertView, status: int = 200) -> Response[bytes]:
    resource = care.flag_resource(view)
    return fhir(resource, status, {"ETag": domain.etag(int(resource["meta"]["versionId"]))})


async def _alert(gateway: Gateway, clinic: str, flag_id: str) -> tuple[ClinicLink, care.AlertView]:
    link = await _care_link(gateway, clinic)
    try:
        alert_id = uuid.UUID(flag_id)
    except ValueError:
        alert_id = None
    view = link.care.alerts.get(alert_id) if alert_id is not None else None
    if view is None or not link.care.on_team(view.raised.patient_ref):
        raise domain.not_found("Flag", flag_id)  # noqa: EM101 - the resource's name, not a message
    return link, view


@post("/fhir/Flag", status_code=201)
async def create_flag(request: Request[Any, Any, Any]) -> Response[bytes]:
    """A contraindication alert to the patient's care team (``alert.raise``)."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Flag", "c")
    body = _object(await json_body(request), "Flag")
    command = care.alert_raise(await gateway.envelope(grant.clinic), body)
    link = await gateway.connections.link(grant.clinic)
    answer = await link.send_and_wait(command)
    if answer is not None and isinstance(answer.message, Rejection):
        raise domain.from_rejection(answer.message)
    if not await link.wait_until(lambda: command.alert_id in link.care.alerts):
        raise FhirError(503, GatewayCode.HUB_UNAVAILABLE, "the alert was stored but not yet confirmed; read it later")
    return _flag_response(link.care.alerts[command.alert_id], 201)


@get("/fhir/Flag/{flag_id:str}")
async def read_flag(request: Request[Any, Any, Any], flag_id: str) -> Response[bytes]:
    """An alert on a patient whose care team the clinic is on."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Flag", "r")
    _, view = await _alert(gateway, grant.clinic, flag_id)
    return _flag_response(view)


@get("/fhir/Flag")
async def search_flag(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The alerts of the care teams the clinic is on, ``patient=`` one patient."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Flag", "s")
    patient = care.patient_parameter(_parameters(request), CARE_SEARCH)
    link = await _care_link(gateway, grant.clinic)
    return _bundle(gateway, "Flag", [care.flag_resource(v) for v in care.alerts_of(link.care, patient)])


async def _change_flag(request: Request[Any, Any, Any], flag_id: str, *, patching: bool) -> Response[bytes]:
    gateway = gateway_of(request)
    grant = gateway.grant(request, "Flag", "u")
    body = await json_body(request)
    link, view = await _alert(gateway, grant.clinic, flag_id)
    current = care.flag_resource(view)
    domain.check_if_match(request.headers.get("if-match"), int(current["meta"]["versionId"]))
    wanted = domain.apply_patch(current, body) if patching else _object(body, "Flag")
    command = care.alert_change(await gateway.envelope(grant.clinic), view, wanted)
    answer = await link.send_and_wait(command)
    if answer is not None and isinstance(answer.message, Rejection):
        raise domain.from_rejection(answer.message)
    return _flag_response(view)


@put("/fhir/Flag/{flag_id:str}")
async def update_flag(request: Request[Any, Any, Any], flag_id: str) -> Response[bytes]:
    """``status`` ``inactive`` resolves the alert (its raiser only); a new acknowledgement extension acknowledges it."""
    return await _change_flag(request, flag_id, patching=False)


@patch("/fhir/Flag/{flag_id:str}")
async def patch_flag(request: Request[Any, Any, Any], flag_id: str) -> Response[bytes]:
    """The same, as a JSON Patch of the Flag."""
    return await _change_flag(request, flag_id, patching=True)


def _issue(link: ClinicLink, view: care.IssueView) -> dict[str, Any]:
    referral_id = view.flag.referral_id
    return care.detected_issue_resource(view, link.care.overrides.get(referral_id) if referral_id else None)


@get("/fhir/DetectedIssue/{issue_id:str}")
async def read_detected_issue(request: Request[Any, Any, Any], issue_id: str) -> Response[bytes]:
    """A screening flag as this clinic's copy of it says; its override and disputes as mitigations."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "DetectedIssue", "r")
    link = await _care_link(gateway, grant.clinic)
    for view in care.issues_of(link.care, None):
        if str(view.flag.flag_id) == issue_id:
            return fhir(_issue(link, view))
    raise domain.not_found("DetectedIssue", issue_id)  # noqa: EM101 - the resource's name, not a message


@get("/fhir/DetectedIssue")
async def search_detected_issue(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The screening flags sent to this clinic, ``patient=`` one patient."""
    gateway = gateway_of(request)
    grant = gateway.grant(request, "DetectedIssue", "s")
    patient = care.patient_parameter(_parameters(request), frozenset({"patient"}))
    link = await _care_link(gateway, grant.clinic)
    return _bundle(gateway, "DetectedIssue", [_issue(link, v) for v in care.issues_of(link.care, patient)])


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
        raise domain.not_found("AuditEvent", "")  # noqa: EM101 - the resource's name, not a message
    parameters = _parameters(request)
    since, until = domain.audit_date_bounds(parameters)
    offset, count = domain.page_bounds(parameters)
    if offset > AUDIT_MAX_OFFSET:
        msg = f"_offset reaches at most {AUDIT_MAX_OFFSET}; narrow the date range instead"
        raise FhirError(400, GatewayCode.UNSUPPORTED, msg)
    entries = await audit.entries(grant.clinic, since, until, offset + count + 1)
    page = entries[offset : offset + count]
    base = f"{gateway.settings.fhir_base}/AuditEvent"
    plain = {k: v for k, v in parameters.items() if k not in {"_offset", "_count"}}

    def link_to(start: int) -> str:
        return f"{base}?{urlencode({**plain, '_count': [str(count)], '_offset': [str(start)]}, doseq=True)}"

    links = {"self": link_to(offset)}
    if len(entries) > offset + count:
        links["next"] = link_to(offset + count)
    if offset > 0:
        links["previous"] = link_to(max(0, offset - count))
    bundle = domain.searchset(gateway.settings.fhir_base, [to_audit_event(e) for e in page], 0, links)
    del bundle["total"]
    return fhir(bundle)


# --- Errors ----------------------------------------------------------------------------------


def fhir_error(_request: Request[Any, Any, Any], exc: FhirError) -> Response[bytes]:
    """Every refusal as an ``OperationOutcome``."""
    log.info("gateway_refused", status=exc.status, code=str(exc.code))
    headers = dict(exc.headers)
    if exc.status == 401:  # noqa: PLR2004 - HTTP status
        headers.setdefault("WWW-Authenticate", 'Bearer error="invalid_token"')
    return fhir(domain.operation_outcome(exc.status, str(exc.code), exc.diagnostics), exc.status, headers)


HTTP_CODES: Final[Mapping[int, str]] = {
    400: RejectionCode.MALFORMED_JSON,
    404: GatewayCode.NOT_FOUND,
    405: GatewayCode.UNSUPPORTED,
    413: RejectionCode.MESSAGE_TOO_LARGE,
    415: GatewayCode.UNSUPPORTED,
}


def http_error(_request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """The framework's own refusals (no route, body too large, ...) as ``OperationOutcome`` too."""
    status = exc.status_code
    code = HTTP_CODES.get(status, GatewayCode.UNSUPPORTED if status < 500 else RejectionCode.PROCESSING_FAILED)  # noqa: PLR2004 - HTTP status class
    return fhir(domain.operation_outcome(status, str(code), str(exc.detail)), status)


def internal_error(_request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """A failure of ours: logged with its type, answered without internals."""
    log.error("gateway_failed", error=type(exc).__name__, detail=str(exc))
    diagnostics = "the gateway failed to handle the request; nothing was changed, or retry with the same identifier"
    return fhir(domain.operation_outcome(500, RejectionCode.PROCESSING_FAILED, diagnostics), 500)


def create_app(settings: GatewaySettings) -> Litestar:
    """The gateway app; its lifespan opens the store and closes every clinic connection."""
    gateway = Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    audit_handlers = [search_audit_event] if settings.audit_index is not None else []
    app = Litestar(
        route_handlers=[
            *audit_handlers,
            health,
            token,
            metadata,
            create_task,
            transaction,
            read_task,
            read_service_request,
            search_task,
            update_task,
            patch_task,
            create_communication,
            search_communication,
            create_document,
            read_document,
            read_binary,
            create_subscription,
            read_subscription,
            update_subscription,
            delete_subscription,
            subscription_status,
            subscription_events,
            create_care_plan,
            update_care_plan,
            read_care_plan,
            search_care_plan,
            search_care_team,
            read_care_team,
            create_flag,
            read_flag,
            search_flag,
            update_flag,
            patch_flag,
            read_detected_issue,
            search_detected_issue,
        ],
        lifespan=[lifespan],
        exception_handlers={FhirError: fhir_error, HTTPException: http_error, Exception: internal_error},
        request_max_body_size=MAX_BODY_BYTES,
        openapi_config=None,
    )
    app.state.gateway = gateway
    return app


def run(settings: GatewaySettings) -> None:
    """Serve the gateway with uvicorn until interrupted; HTTPS when a certificate is configured."""
    log.info("gateway_starting", url=settings.fhir_base, tls=settings.tls_cert is not None)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=3,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
    )
