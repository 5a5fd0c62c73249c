"""What every gateway route shares: the settings, the running gateway, and FHIR JSON in and out."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgspec
import structlog
from joserfc.jwk import ECKey
from litestar import Request, Response
from nats.aio.client import Client

from referral_hub.contracts.rejections import RejectionCode
from referral_hub.errors import HubError
from referral_hub.gateway import auth, outcomes, task_views
from referral_hub.gateway.adapters import AuditSearch, ClinicConnections, ClinicLink, GatewayStore
from referral_hub.gateway.outcomes import FhirError, GatewayCode
from referral_hub.gateway.patients import GatewayPatients
from referral_hub.gateway.rest_hooks import RestHooks
from referral_hub.gateway.task_commands import Envelope
from referral_hub.gateway.task_views import TaskView
from referral_hub.runtime.hosting.tasks import cancel_and_wait
from referral_hub.runtime.jetstream import topology
from referral_hub.runtime.jetstream.kvstore import KvView
from referral_hub.runtime.messaging.admission import RateLimit, RateLimiter
from referral_hub.sealing.keystore import KeyStore

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
    allow_private_hook_endpoints: bool = False
    """Development only: let rest-hooks reach loopback and private addresses (``hubctl up`` sets it)."""
    rate_per_second: float = 50.0
    """Requests one clinic's tokens may make per second on this replica, sustained (then 429)."""
    rate_burst: float = 200.0
    metrics_port: int | None = None
    """Where ``/metrics`` and ``/health`` are served, apart from the FHIR port; ``None``: not served."""
    metrics_host: str = "127.0.0.1"

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
    id_key: bytes
    deliverer: RestHooks
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
        self.limiter = RateLimiter(RateLimit(settings.rate_per_second, settings.rate_burst))
        self.subscribing = asyncio.Lock()
        """Held from counting a clinic's subscriptions to storing its new one (the per-clinic cap)."""
        self.patients = GatewayPatients(KeyStore.from_environment())

    async def start(self) -> None:
        """Connect as the ``gateway`` user, load (or, first of all replicas, make) the token key, start delivering."""
        store = await GatewayStore.open(self.settings.nats_url)
        try:
            key = auth.signing_key(await store.signing_key(auth.new_signing_key))
            id_key = await store.id_key()
        except BaseException:
            with contextlib.suppress(Exception):
                await store.close()
            raise
        deliverer = RestHooks(
            store.buckets[topology.GATEWAY_SUBSCRIPTIONS_KV],
            self.connections,
            self.settings.fhir_base,
            allow_private=self.settings.allow_private_hook_endpoints,
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
        self._started = Started(store, key, id_key, deliverer, tokens, clients, audit)
        self._delivering = asyncio.create_task(deliverer.run(), name="gateway-delivery")
        self._following = asyncio.create_task(
            clients.follow(store.buckets[topology.GATEWAY_CLIENTS_KV]), name="gateway-clients-watch"
        )
        self.patients.start(store.connection.jetstream())

    def nats_connection(self) -> Client | None:
        """The ``gateway`` user's connection once started, for the readiness probe."""
        return self._started.store.connection if self._started is not None else None

    async def stop(self) -> None:
        """Stop delivering and close every connection."""
        await cancel_and_wait([task for task in (self._delivering, self._following) if task is not None])
        await self.patients.stop()
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
    def deliverer(self) -> RestHooks:
        """The rest-hook deliverer (after :meth:`start`)."""
        return self.started.deliverer

    def grant(self, request: Request[Any, Any, Any], resource: str, permission: str) -> auth.Grant:
        """The request's verified grant, refused unless it allows ``permission`` on ``resource``."""
        grant = self.started.tokens.grant(request.headers.get("authorization"))
        if not self.limiter.allows(grant.clinic, utc_now()):
            # Counted per clinic after the token is verified: nobody can spend another clinic's budget.
            limit = self.limiter.limit
            msg = f"more than {limit.per_second:g} requests/s (burst {limit.burst:g}) from this client; retry later"
            retry = str(max(1, math.ceil(1 / limit.per_second)))
            raise FhirError(429, RejectionCode.RATE_LIMITED, msg, {"Retry-After": retry})
        outcomes.require_scope(grant.scopes, resource, permission)
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
        return Envelope(clinic, client.actor, self.clock(), self.started.id_key)


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
    except RecursionError as exc:
        raise FhirError(400, RejectionCode.MALFORMED_JSON, "the body's JSON is nested too deeply") from exc


def task_response(view: TaskView, status: int = 200, base: str = "") -> Response[bytes]:
    """A Task with its ETag (and Location, when created)."""
    task = task_views.task_resource(view)
    headers = {"ETag": outcomes.etag(view.version)}
    if status == 201:  # noqa: PLR2004 - HTTP status
        headers["Location"] = f"{base}/Task/{task['id']}/_history/{view.version}"
    return fhir(task, status, headers)


async def caught_up(link: ClinicLink) -> ClinicLink:
    """The link, once its folded view holds everything the clinic's inbox held when asked."""
    newest = await link.client.last_event_number()
    await link.wait_until(lambda: link.referrals.last_event_number >= newest, 5.0)
    return link


async def task_view(gateway: Gateway, clinic: str, task_id: str) -> tuple[ClinicLink, TaskView]:
    """The clinic's Task, as of everything its inbox held when the request came.

    The folded view follows the inbox a moment behind; before answering 404 it catches up
    to the inbox's newest number, so a Task whose event is already stored is always found.
    """
    link = await gateway.connections.link(clinic)
    view = link.referrals.task(task_id)
    if view is None:
        await caught_up(link)
        view = link.referrals.task(task_id)
    if view is None:
        raise outcomes.not_found("Task", task_id)  # noqa: EM101 - the resource's name, not a message
    return link, view


def parameters(request: Request[Any, Any, Any]) -> dict[str, list[str]]:
    """Every query parameter with all its values, as FHIR search allows a name to repeat."""
    return {name: request.query_params.getall(name) for name in request.query_params}
