"""SMART Backend Services: a clinic's signed client assertion in, a short-lived bearer token out.

All JOSE work is joserfc's; this module only decides which keys and claims are acceptable.
The checks, in order: the assertion names a registered clinic (``iss``), is signed with RS384
or ES384 by a key in that clinic's registered JWKS, has ``sub`` equal to ``iss``, ``aud`` equal
to the token URL, an ``exp`` that has not passed and is at most five minutes ahead, and a
``jti``. The caller then records the ``jti`` with a create-only write, so a replay, on this
replica or another, is refused.

The bearer token is itself a JWT, signed (ES256) with the gateway's key kept in its KV
bucket, so every replica verifies every replica's tokens without a lookup.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import msgspec
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

from referral_hub.gateway import scopes
from referral_hub.gateway.outcomes import FhirError, GatewayCode

ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLIENT_ALGORITHMS: Final = ("RS384", "ES384")
"""The only algorithms a clinic may sign its assertion with (SMART Backend Services)."""
TOKEN_ALGORITHM: Final = "ES256"  # noqa: S105 - an algorithm name, not a secret
MAX_ASSERTION_LIFETIME: Final = timedelta(minutes=5)
TOKEN_LIFETIME: Final = timedelta(minutes=5)
JTI_MAX_LENGTH: Final = 200
CLOCK_SKEW: Final = timedelta(seconds=60)
"""How far ahead of the gateway's clock an assertion's ``iat`` or ``nbf`` may be."""
_CLIENT_ID: Final = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
"""A clinic id (``contracts.base.ClinicId``): an ``iss`` that is not one names no client."""


class ClientRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A registered clinic system: its public JWKS and the member the hub records as actor."""

    clinic: str
    jwks: dict[str, Any]
    actor: str
    scopes: tuple[str, ...] = scopes.SUPPORTED_SCOPES
    """The most a token of this client may carry (its ceiling); ``hubctl gateway client add --scope`` sets it."""


@dataclass(frozen=True)
class Assertion:
    """A client assertion that passed every check but the replay one."""

    clinic: str
    jti: str
    expires_at: datetime


@dataclass(frozen=True)
class Grant:
    """What a verified bearer token allows: one clinic, some scopes."""

    clinic: str
    scopes: tuple[str, ...]


def _invalid(reason: str) -> FhirError:
    return FhirError(401, GatewayCode.INVALID_CLIENT, reason)


def unverified_issuer(assertion: str) -> str:
    """The ``iss`` claim, read before verification only to choose which clinic's keys to verify with."""
    try:
        payload = json.loads(jws.extract_compact(assertion.encode()).payload)
    except (JoseError, ValueError) as exc:
        msg = "the client assertion is not a compact JWS"
        raise _invalid(msg) from exc
    issuer = payload.get("iss") if isinstance(payload, dict) else None
    if not isinstance(issuer, str) or not _CLIENT_ID.fullmatch(issuer):
        # Refused before any lookup: an iss that is no clinic id (``*``, ``>``, ``../``) is
        # answered like an unknown one, never used as a key.
        msg = "no client is registered under this iss"
        raise _invalid(msg)
    return issuer


def public_key_set(jwks: dict[str, Any]) -> KeySet:
    """A registered JWKS, refused unless every key is an RS384 or ES384 public key."""
    try:
        keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        msg = f"not a JWKS: {exc}"
        raise ValueError(msg) from exc
    for key in keys.keys:
        if key.is_private:
            msg = "a registered JWKS holds public keys only"
            raise ValueError(msg)
        alg = key.get("alg")
        if key.key_type not in {"RSA", "EC"} or (alg is not None and alg not in CLIENT_ALGORITHMS):
            msg = f"key {key.kid}: only RS384 and ES384 keys are accepted"
            raise ValueError(msg)
        if key.key_type == "EC" and key.get("crv") != "P-384":
            msg = f"key {key.kid}: an ES384 key is on curve P-384"
            raise ValueError(msg)
    return keys


def verify_assertion(assertion: str, client: ClientRecord, token_url: str, now: datetime) -> Assertion:
    """Check a clinic's client assertion against its registered keys; raise 401 on any failure."""
    try:
        token = jwt.decode(assertion, public_key_set(client.jwks), algorithms=list(CLIENT_ALGORITHMS))
    except (JoseError, ValueError) as exc:
        msg = f"the client assertion's signature does not verify with a registered key ({type(exc).__name__})"
        raise _invalid(msg) from exc
    claims = token.claims
    if claims.get("iss") != client.clinic or claims.get("sub") != client.clinic:
        msg = "iss and sub must both be the client id"
        raise _invalid(msg)
    audience = claims.get("aud")
    if audience != token_url and not (isinstance(audience, list) and token_url in audience):
        msg = f"aud must be the token URL {token_url}"
        raise _invalid(msg)
    expires = claims.get("exp")
    if not isinstance(expires, int | float):
        msg = "the client assertion has no exp"
        raise _invalid(msg)
    expires_at = _instant(expires, "exp", now)
    if expires_at <= now:
        msg = "the client assertion has expired"
        raise _invalid(msg)
    if expires_at > now + MAX_ASSERTION_LIFETIME:
        msg = "the client assertion's exp is more than five minutes ahead"
        raise _invalid(msg)
    _check_not_before(claims, now)
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > JTI_MAX_LENGTH:
        msg = "the client assertion needs a jti"
        raise _invalid(msg)
    return Assertion(client.clinic, jti, expires_at)


def _check_not_before(claims: dict[str, Any], now: datetime) -> None:
    """``nbf`` and ``iat``, when present, are numbers not later than now (give or take :data:`CLOCK_SKEW`).

    An assertion made for later (or claiming to be) is refused: it could be used outside the
    five minutes its signer meant it for.
    """
    for claim in ("nbf", "iat"):
        if claim not in claims:
            continue
        value = claims[claim]
        if isinstance(value, bool) or not isinstance(value, int | float):
            msg = f"the client assertion's {claim} is not a time"
            raise _invalid(msg)
        if _instant(value, claim, now) > now + CLOCK_SKEW:
            msg = f"the client assertion's {claim} is in the future"
            raise _invalid(msg)


def _instant(value: float, claim: str, now: datetime) -> datetime:
    """A NumericDate claim as a time; one out of any calendar's range is refused, not a crash."""
    try:
        return datetime.fromtimestamp(value, now.tzinfo)
    except (OverflowError, OSError, ValueError) as exc:
        msg = f"the client assertion's {claim} is not a time"
        raise _invalid(msg) from exc


def new_signing_key() -> dict[str, Any]:
    """A fresh private JWK for signing bearer tokens."""
    key = ECKey.generate_key("P-256", parameters={"kid": str(uuid.uuid4()), "alg": TOKEN_ALGORITHM}, private=True)
    return dict(key.as_dict(private=True))


def signing_key(jwk: dict[str, Any]) -> ECKey:
    """The gateway's token key, from its stored JWK."""
    return ECKey.import_key(jwk)


def issue_token(key: ECKey, issuer: str, clinic: str, scopes: tuple[str, ...], now: datetime) -> str:
    """A bearer token for ``clinic`` with ``scopes``, valid for :data:`TOKEN_LIFETIME`."""
    claims = {
        "iss": issuer,
        "sub": clinic,
        "aud": issuer,
        "iat": int(now.timestamp()),
        "exp": int((now + TOKEN_LIFETIME).timestamp()),
        "jti": str(uuid.uuid4()),
        "scope": " ".join(scopes),
    }
    return jwt.encode({"alg": TOKEN_ALGORITHM, "kid": key.kid}, claims, key, algorithms=[TOKEN_ALGORITHM])


def verify_token(authorization: str | None, key: ECKey, issuer: str, clock: Callable[[], datetime]) -> Grant:
    """The grant of a ``Bearer`` Authorization header; 401 for anything missing, forged or expired."""
    grant, _ = _verified(_bearer(authorization), key, issuer, clock())
    return grant


def _bearer(authorization: str | None) -> str:
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise FhirError(401, GatewayCode.INVALID_TOKEN, "a Bearer token from /auth/token is required")
    return value.strip()


def _verified(token: str, key: ECKey, issuer: str, now: datetime) -> tuple[Grant, int]:
    """The token's grant and its ``exp``, after checking its signature and claims."""
    try:
        claims = jwt.decode(token, key, algorithms=[TOKEN_ALGORITHM]).claims
    except (JoseError, ValueError) as exc:
        raise FhirError(401, GatewayCode.INVALID_TOKEN, "the bearer token is not one this gateway issued") from exc
    if claims.get("iss") != issuer or claims.get("aud") != issuer:
        raise FhirError(401, GatewayCode.INVALID_TOKEN, "the bearer token was issued for another gateway")
    expires = claims.get("exp")
    if not isinstance(expires, int) or expires <= now.timestamp():
        raise FhirError(401, GatewayCode.INVALID_TOKEN, "the bearer token has expired")
    clinic = claims.get("sub")
    if not isinstance(clinic, str):
        raise FhirError(401, GatewayCode.INVALID_TOKEN, "the bearer token names no clinic")
    return Grant(clinic, tuple(str(claims.get("scope", "")).split())), expires


class VerifiedTokens:
    """Bearer tokens whose signature and claims were checked, kept with their grant until ``exp``.

    A clinic's system sends the same token on every request for its five-minute life, and
    an ES256 verification costs more than the rest of a Task read. A token is trusted again
    only as the exact same string, and only while its ``exp`` has not passed (checked on each
    use); nothing else about it can change, since the gateway keeps no revocation list. At
    most ``limit`` tokens are held: past that, expired ones are dropped, then all.
    """

    def __init__(self, key: ECKey, issuer: str, clock: Callable[[], datetime], limit: int = 10_000) -> None:
        """Verify with the gateway's ``key`` for tokens it issued as ``issuer``."""
        self._key = key
        self._issuer = issuer
        self._clock = clock
        self._limit = limit
        self._grants: dict[str, tuple[Grant, int]] = {}

    def grant(self, authorization: str | None) -> Grant:
        """As :func:`verify_token`, without verifying a token seen before again."""
        token = _bearer(authorization)
        now = self._clock()
        known = self._grants.get(token)
        if known is not None:
            if known[1] > now.timestamp():
                return known[0]
            del self._grants[token]
        grant, expires = _verified(token, self._key, self._issuer, now)
        if len(self._grants) >= self._limit:
            self._grants = {t: g for t, g in self._grants.items() if g[1] > now.timestamp()}
            if len(self._grants) >= self._limit:
                self._grants.clear()
        self._grants[token] = (grant, expires)
        return grant


def client_assertion(
    private_jwk: dict[str, Any],
    clinic: str,
    token_url: str,
    now: datetime,
    **overrides: Any,  # noqa: ANN401 - any claim value
) -> str:
    """A client assertion signed with ``private_jwk``, as a clinic's system makes one (tools and tests).

    ``overrides`` replace claims (``exp``, ``aud``, ``jti``...), to show what the gateway refuses.
    """
    key = ECKey.import_key(private_jwk) if private_jwk.get("kty") == "EC" else None
    if key is None:
        from joserfc.jwk import RSAKey  # noqa: PLC0415 - only RSA clients need it

        signer: Any = RSAKey.import_key(private_jwk)
        alg = "RS384"
    else:
        signer, alg = key, "ES384"
    claims = {
        "iss": clinic,
        "sub": clinic,
        "aud": token_url,
        "exp": int((now + timedelta(minutes=4)).timestamp()),
        "jti": str(uuid.uuid4()),
        **overrides,
    }
    return jwt.encode({"alg": alg, "kid": signer.kid, "typ": "JWT"}, claims, signer, algorithms=[alg])


def generate_client_key(kid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new ES384 key pair for a clinic system: (private JWK, public JWKS)."""
    key = ECKey.generate_key("P-384", parameters={"kid": kid, "alg": "ES384", "use": "sig"}, private=True)
    return dict(key.as_dict(private=True)), {"keys": [dict(key.as_dict(private=False))]}
