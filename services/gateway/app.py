"""The clinic gateway's wiring: a Litestar app serving FHIR R4 under ``/fhir`` and SMART's ``/auth/token``.

The route handlers live in ``routes/``, one module per group of resources, each listing its
``HANDLERS``; they are thin: they verify the bearer token, check its scope, parse the FHIR
JSON, call the pure mapping (``domain``, ``care``) and act as the token's clinic through that
clinic's own NATS connection (``adapters``). What they share is in ``web``. Every refusal
leaves as an ``OperationOutcome`` (the exception handlers here).

Litestar because it decodes and encodes with msgspec (the hub's contracts are msgspec
Structs) and is an actively kept ASGI framework; uvicorn serves it, with TLS when the hub's
certificate files are configured.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import structlog
import uvicorn
from litestar import Litestar, Request, Response
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.types import ASGIApp, Receive, Scope, Send

from referral_hub.contracts.rejections import RejectionCode
from referral_hub.gateway import negotiation, outcomes
from referral_hub.gateway.outcomes import FhirError, GatewayCode
from referral_hub.gateway.routes import audit, care, documents, server, subscriptions, tasks
from referral_hub.gateway.web import MAX_BODY_BYTES, Gateway, GatewaySettings, fhir
from referral_hub.runtime.hosting import security_headers, web_metrics

log = structlog.get_logger(__name__)

# --- Errors ----------------------------------------------------------------------------------


def fhir_error(_request: Request[Any, Any, Any], exc: FhirError) -> Response[bytes]:
    """Every refusal as an ``OperationOutcome``."""
    log.info("gateway_refused", status=exc.status, code=str(exc.code))
    headers = dict(exc.headers)
    if exc.status == 401:  # noqa: PLR2004 - HTTP status
        headers.setdefault("WWW-Authenticate", 'Bearer error="invalid_token"')
    return fhir(outcomes.operation_outcome(exc.status, str(exc.code), exc.diagnostics), exc.status, headers)


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
    return fhir(outcomes.operation_outcome(status, str(code), str(exc.detail)), status)


def internal_error(_request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """A failure of ours: logged with its type, answered without internals."""
    log.error("gateway_failed", error=type(exc).__name__, detail=str(exc))
    diagnostics = "the gateway failed to handle the request; nothing was changed, or retry with the same identifier"
    return fhir(outcomes.operation_outcome(500, RejectionCode.PROCESSING_FAILED, diagnostics), 500)


def negotiating(app: ASGIApp) -> ASGIApp:
    """Serve FHIR JSON or refuse with 406 before any handler runs (``negotiation``); ``_format`` becomes ``Accept``."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or not scope["path"].startswith("/fhir"):
            await app(scope, receive, send)
            return
        headers = [(name, value) for name, value in scope["headers"] if name != b"accept"]
        accept = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"accept"), None)
        decided = negotiation.negotiate(scope["path"], scope["query_string"].decode("latin-1"), accept)
        if decided.refusal:
            # Raised, not sent: the app's exception handlers answer it like every other refusal.
            raise FhirError(406, GatewayCode.UNSUPPORTED, decided.refusal)
        if decided.accept is not None:
            headers.append((b"accept", decided.accept.encode("latin-1")))
        changed = scope.copy()
        changed["query_string"] = decided.query.encode("latin-1")
        changed["headers"] = headers
        await app(changed, receive, send)

    return middleware


def create_app(settings: GatewaySettings) -> Litestar:
    """The gateway app; its lifespan opens the store and closes every clinic connection."""
    gateway = Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        await gateway.start()
        try:
            async with web_metrics.metrics_port(
                "gateway", settings.metrics_port, settings.metrics_host, gateway.nats_connection
            ):
                yield
        finally:
            await gateway.stop()

    # AuditEvent is served only with an audit index (it reads the log as the auditor).
    audit_handlers = audit.HANDLERS if settings.audit_index is not None else ()
    app = Litestar(
        route_handlers=[
            *server.HANDLERS,
            *tasks.HANDLERS,
            *documents.HANDLERS,
            *subscriptions.HANDLERS,
            *care.HANDLERS,
            *audit_handlers,
        ],
        lifespan=[lifespan],
        exception_handlers={FhirError: fhir_error, HTTPException: http_error, Exception: internal_error},
        middleware=[*web_metrics.middleware("gateway"), negotiating],
        request_max_body_size=MAX_BODY_BYTES,
        before_send=[security_headers.add_missing(security_headers.API_HEADERS)],
        openapi_config=None,
        logging_config=None,  # Litestar's default takes over the root logger; lines stay JSON (runtime.hosting.logs)
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
        log_config=None,  # uvicorn's own lines go through the process's JSON logging (runtime.hosting.logs)
        access_log=False,
        timeout_graceful_shutdown=3,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
    )
