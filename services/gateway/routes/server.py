"""The token endpoint (SMART Backend Services), health, and the CapabilityStatement."""

from __future__ import annotations

from typing import Any, Final

import msgspec
import structlog
from litestar import Request, Response, get, post

from referral_hub.gateway import auth, scopes
from referral_hub.gateway.adapters import ReplayError
from referral_hub.gateway.outcomes import FhirError
from referral_hub.gateway.web import GatewaySettings, fhir, gateway_of

log = structlog.get_logger(__name__)


# --- Authentication --------------------------------------------------------------------------


@post("/auth/token", status_code=200)
async def token(request: Request[Any, Any, Any]) -> Response[bytes]:  # noqa: PLR0911 - one answer per OAuth error
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
        granted = scopes.grant(str(form.get("scope") or ""), client.scopes)
    except FhirError as exc:
        return _oauth_error(exc.status, "invalid_client", exc.diagnostics)
    except ReplayError as exc:
        return _oauth_error(401, "invalid_client", str(exc))
    except scopes.ScopeError as exc:
        return _oauth_error(400, "invalid_scope", str(exc))
    bearer = auth.issue_token(gateway.key, gateway.settings.base, checked.clinic, granted, gateway.clock())
    log.info("gateway_token_issued", clinic=checked.clinic)
    body = {
        "access_token": bearer,
        "token_type": "bearer",
        "expires_in": int(auth.TOKEN_LIFETIME.total_seconds()),
        "scope": " ".join(granted),
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


@get(["/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"])
async def smart_configuration(request: Request[Any, Any, Any]) -> Response[bytes]:
    """SMART's discovery document: how a backend service gets a token here, and which scopes exist."""
    return Response(msgspec.json.encode(smart_document(gateway_of(request).settings)), media_type="application/json")


def smart_document(settings: GatewaySettings) -> dict[str, Any]:
    """``/.well-known/smart-configuration`` for SMART Backend Services (no user-facing launch)."""
    return {
        "issuer": settings.base,
        "token_endpoint": settings.token_url,
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(auth.CLIENT_ALGORITHMS),
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": list(scopes.SUPPORTED_SCOPES),
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
    }


@get("/health")
async def health() -> Response[bytes]:
    """Readiness for ``hubctl up`` and load balancers: the app started (its store is open)."""
    return Response(b"ok", media_type="text/plain")


# --- Capability ------------------------------------------------------------------------------


@get("/fhir/metadata")
async def metadata(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The CapabilityStatement: exactly the resources and interactions served.

    Every search also takes ``_format`` (JSON only; XML is 406) and a date parameter takes a
    value with or without a prefix (``negotiation``, ``fhir_search``); ``owner``,
    ``requester`` and ``patient`` take the ``:identifier`` modifier, their references being
    logical ones.
    """
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
                            {"code": code} for code in ("read", "vread", "create", "update", "patch", "search-type")
                        ],
                        "searchParam": search,
                    },
                    {"type": "ServiceRequest", "interaction": [{"code": "read"}, {"code": "vread"}]},
                    {"type": "Patient", "interaction": [{"code": "read"}]},
                    {
                        "type": "DocumentReference",
                        "interaction": [{"code": "create"}, {"code": "read"}, {"code": "search-type"}],
                        "searchParam": [{"name": "related", "type": "reference"}],
                    },
                    {"type": "Binary", "interaction": [{"code": "read"}]},
                    {
                        "type": "Communication",
                        "interaction": [{"code": code} for code in ("read", "vread", "create", "search-type")],
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


HANDLERS: Final = (token, smart_configuration, health, metadata)
