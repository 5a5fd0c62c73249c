"""The gateway's cache of verified bearer tokens: pure, no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from referral_hub.gateway import auth
from referral_hub.gateway.outcomes import FhirError

ISSUER = "https://gateway.example"


def test_a_cached_token_is_refused_once_expired_and_only_its_exact_string_is_trusted() -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    key = auth.signing_key(auth.new_signing_key())
    tokens = auth.VerifiedTokens(key, ISSUER, lambda: now[0], limit=2)
    token = auth.issue_token(key, ISSUER, "harbor-pt", ("system/Task.r",), now[0])

    assert tokens.grant(f"Bearer {token}") == auth.Grant("harbor-pt", ("system/Task.r",))
    assert tokens.grant(f"bearer {token}").clinic == "harbor-pt"
    with pytest.raises(FhirError, match="not one this gateway issued"):
        tokens.grant(f"Bearer {token}x")
    other = auth.signing_key(auth.new_signing_key())
    with pytest.raises(FhirError, match="not one this gateway issued"):
        tokens.grant(f"Bearer {auth.issue_token(other, ISSUER, 'harbor-pt', (), now[0])}")
    with pytest.raises(FhirError, match="Bearer token from /auth/token is required"):
        tokens.grant(None)
    # More tokens than the limit: still each verified and granted.
    for clinic in ("lotus-acu", "kneadwell-massage", "harbor-pt"):
        assert tokens.grant(f"Bearer {auth.issue_token(key, ISSUER, clinic, (), now[0])}").clinic == clinic

    now[0] += auth.TOKEN_LIFETIME + timedelta(seconds=1)
    with pytest.raises(FhirError, match="expired"):
        tokens.grant(f"Bearer {token}")
