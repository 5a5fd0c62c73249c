"""What every gateway resource shares, pure: refusals, scopes, versions, and FHIR fields into a contract.

Every refusal is a :class:`FhirError`: an HTTP status and a stable code (the hub's
:class:`RejectionCode` where the hub refused, a :class:`GatewayCode` where the gateway did),
rendered as an ``OperationOutcome``. A resource's version is its ``ETag`` (``W/"n"``), checked
against ``If-Match`` before anything is sent.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeVar

import msgspec

from referral_hub.contracts.base import Message
from referral_hub.contracts.rejections import Rejection, RejectionCode
from referral_hub.errors import HubError

M = TypeVar("M", bound=Message)
REJECTION_SYSTEM: Final = "urn:referral-hub:rejection-code"
"""The CodeSystem of ``OperationOutcome.issue.details``: the hub's stable rejection codes."""


class GatewayCode(enum.StrEnum):
    """Refusals the gateway makes itself, before anything reaches the hub. Never rename one."""

    INVALID_TOKEN = "invalid_token"  # noqa: S105 - an error code, not a secret
    """No bearer token, or one that is expired, forged or not the gateway's."""
    INVALID_CLIENT = "invalid_client"
    """A client assertion failed a check: signature, key, issuer, audience, expiry or replay."""
    INSUFFICIENT_SCOPE = "insufficient_scope"
    """The token's scopes do not cover this interaction."""
    NOT_FOUND = "not_found"
    """No such resource that this clinic may see (another clinic's looks exactly like this)."""
    STALE_VERSION = "stale_version"
    """``If-Match`` names a version that is no longer current; nothing changed."""
    UNSUPPORTED = "unsupported"
    """An interaction, parameter or change the gateway does not offer."""
    HUB_UNAVAILABLE = "hub_unavailable"
    """The hub did not answer in time; the request may be retried with the same identifier."""


Code = RejectionCode | GatewayCode
HUB_STATUS: Final[Mapping[RejectionCode, int]] = {
    RejectionCode.MALFORMED_JSON: 400,
    RejectionCode.SCHEMA_VIOLATION: 422,
    RejectionCode.UNKNOWN_MESSAGE_TYPE: 400,
    RejectionCode.UNSUPPORTED_VERSION: 400,
    RejectionCode.INVALID_SUBJECT: 400,
    RejectionCode.SUBJECT_TYPE_MISMATCH: 400,
    RejectionCode.SENDER_MISMATCH: 403,
    RejectionCode.UNKNOWN_CLINIC: 422,
    RejectionCode.UNKNOWN_MEMBER: 403,
    RejectionCode.INVALID_RECIPIENT: 422,
    RejectionCode.DUPLICATE_REFERRAL_ID: 409,
    RejectionCode.UNSUPPORTED_MESSAGE_TYPE: 400,
    RejectionCode.UNKNOWN_REFERRAL: 404,
    RejectionCode.PATIENT_MISMATCH: 422,
    RejectionCode.REFERRAL_CLOSED: 409,
    RejectionCode.WRONG_PARTY: 403,
    RejectionCode.INVALID_TRANSITION: 409,
    RejectionCode.STALE_PLAN_VERSION: 412,
    RejectionCode.NOT_ON_CARE_TEAM: 404,
    RejectionCode.NO_CARE_TEAM: 404,
    RejectionCode.INVALID_ALERT: 422,
    RejectionCode.UNKNOWN_ALERT: 404,
    RejectionCode.ALERT_NOT_ACTIVE: 409,
    RejectionCode.UNKNOWN_FLAG: 404,
    RejectionCode.UNKNOWN_PAGE: 404,
    RejectionCode.PAGE_NOT_OPEN: 409,
    RejectionCode.PROCESSING_FAILED: 500,
    RejectionCode.RATE_LIMITED: 429,
    RejectionCode.MESSAGE_TOO_LARGE: 413,
}
"""The HTTP status of each hub rejection. A party that is not the one allowed (``wrong_party``)
gets 403: it is a party, so the referral's existence is no secret from it."""
ISSUE_TYPE: Final[Mapping[int, str]] = {
    400: "structure",
    401: "login",
    403: "forbidden",
    404: "not-found",
    409: "business-rule",
    412: "conflict",
    413: "too-costly",
    422: "invariant",
    429: "throttled",
    500: "exception",
    503: "transient",
}
RETRY_AFTER_SECONDS: Final = 1


class FhirError(HubError):
    """A refusal: an HTTP status, a stable code and a sentence; nothing changed."""

    def __init__(self, status: int, code: Code, diagnostics: str, headers: Mapping[str, str] | None = None) -> None:
        """Keep the parts an ``OperationOutcome`` is made of."""
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics
        self.headers = dict(headers or {})


def operation_outcome(status: int, code: str, diagnostics: str) -> dict[str, Any]:
    """The ``OperationOutcome`` of one refusal, its stable code in ``issue.details``."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": ISSUE_TYPE.get(status, "processing"),
                "details": {"coding": [{"system": REJECTION_SYSTEM, "code": code}], "text": code},
                "diagnostics": diagnostics,
            }
        ],
    }


def from_rejection(rejection: Rejection) -> FhirError:
    """The HTTP refusal for a hub rejection, with its code unchanged."""
    status = HUB_STATUS.get(rejection.code, 422)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 429 else None  # noqa: PLR2004 - HTTP status
    return FhirError(status, rejection.code, rejection.reason, headers)


def not_found(resource_type: str, resource_id: str) -> FhirError:
    """The same answer for a resource that does not exist and for one of another clinic."""
    return FhirError(404, GatewayCode.NOT_FOUND, f"{resource_type}/{resource_id} is not known")


def schema(diagnostics: str) -> FhirError:
    """A resource that is JSON but breaks the mapping's rules."""
    return FhirError(422, RejectionCode.SCHEMA_VIOLATION, diagnostics)


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
"""What a token may carry: SMART v2 ``system/<Resource>.<c r u d s>``."""


def granted_scopes(requested: str) -> tuple[str, ...]:
    """The scopes a token gets: what was asked, within :data:`SUPPORTED_SCOPES` (all of it when nothing was asked)."""
    offered = {scope.split(".")[0]: set(scope.split(".")[1]) for scope in SUPPORTED_SCOPES}
    if not requested.strip():
        return SUPPORTED_SCOPES
    granted = []
    for scope in requested.split():
        resource, _, perms = scope.partition(".")
        wildcard = resource == "system/*"
        for name, allowed in offered.items():
            if (wildcard or name == resource) and (keep := "".join(p for p in "cruds" if p in perms and p in allowed)):
                granted.append(f"{name}.{keep}")
    if not granted:
        raise FhirError(400, GatewayCode.INSUFFICIENT_SCOPE, f"none of the scopes {requested!r} is offered")
    return tuple(dict.fromkeys(granted))


def require_scope(scopes: Iterable[str], resource: str, permission: str) -> None:
    """Refuse with 403 unless a scope allows ``permission`` (one of ``cruds``) on ``resource``."""
    for scope in scopes:
        name, _, perms = scope.partition(".")
        if name in {f"system/{resource}", "system/*"} and permission in perms:
            return
    raise FhirError(403, GatewayCode.INSUFFICIENT_SCOPE, f"the token has no system/{resource}.{permission} scope")


def etag(version: int) -> str:
    """The weak ETag of a version."""
    return f'W/"{version}"'


def check_if_match(header: str | None, current: int) -> None:
    """Refuse with 412 when ``If-Match`` names another version than ``current``."""
    if header is None:
        return
    wanted = header.strip().removeprefix("W/").strip('"')
    if wanted != str(current):
        raise FhirError(412, GatewayCode.STALE_VERSION, f"version {wanted} is stale; the current version is {current}")


def convert(fields: Mapping[str, Any], kind: type[M]) -> M:
    """Build a contract message, turning a constraint it breaks into a 422."""
    try:
        return msgspec.convert(fields, kind)
    except msgspec.ValidationError as exc:
        msg = f"{kind.__struct_config__.tag}: {exc}"
        raise schema(msg) from exc
