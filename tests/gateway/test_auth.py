"""Token checks against the real gateway process: each one is shown to refuse on its own.

Every assertion below differs from a good one in exactly one claim or key, so removing any
single check from ``gateway.auth`` makes exactly one of these tests fail.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from referral_hub.gateway import auth

from .conftest import Systems, token_form
from .fhir_helpers import new_task, rejection_code, valid


async def ask(systems: Systems, assertion: str, scope: str = "") -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(systems.gateway.token_url, data=token_form(assertion, scope))


async def test_a_good_assertion_gets_a_short_lived_token_with_system_scopes(gateway: Systems) -> None:
    answer = await ask(gateway, gateway.assertion("harbor-pt"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "bearer"  # noqa: S105 - the OAuth token type, not a secret
    assert 0 < body["expires_in"] <= 300
    assert "system/Task.cruds" in body["scope"].split()
    assert answer.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        (lambda: {"exp": int(time.time()) - 5}, "expired"),
        (lambda: {"exp": int(time.time()) + 600}, "more than five minutes ahead"),
        (lambda: {"aud": "https://elsewhere.example/auth/token"}, "wrong audience"),
        (lambda: {"sub": "lotus-acu"}, "sub differs from iss"),
        (lambda: {"jti": ""}, "no jti"),
    ],
)
async def test_an_assertion_with_one_bad_claim_is_refused(
    gateway: Systems, claims: Callable[[], dict], why: str
) -> None:
    # Claims are made when the test runs, not at collection: a run can reach this module
    # minutes after collecting it, and "ten minutes ahead" must still be ten minutes ahead.
    answer = await ask(gateway, gateway.assertion("harbor-pt", **claims()))
    assert answer.status_code == 401, why
    assert answer.json()["error"] == "invalid_client"


async def test_a_replayed_jti_is_refused(gateway: Systems) -> None:
    jti = str(uuid.uuid4())
    assert (await ask(gateway, gateway.assertion("harbor-pt", jti=jti))).status_code == 200
    replay = await ask(gateway, gateway.assertion("harbor-pt", jti=jti))
    assert replay.status_code == 401
    assert "already used" in replay.json()["error_description"]


async def test_a_key_not_in_the_clinics_jwks_is_refused(gateway: Systems) -> None:
    stranger, _ = auth.generate_client_key("harbor-pt-test")  # same kid, another key
    forged = auth.client_assertion(stranger, "harbor-pt", gateway.gateway.token_url, datetime.now(UTC))
    assert (await ask(gateway, forged)).status_code == 401
    # lotus-acu's own, registered key does not speak for harbor-pt either.
    other = auth.client_assertion(gateway.keys["lotus-acu"], "harbor-pt", gateway.gateway.token_url, datetime.now(UTC))
    assert (await ask(gateway, other)).status_code == 401


async def test_an_unregistered_clinic_and_a_bad_grant_are_refused(gateway: Systems) -> None:
    stranger, _ = auth.generate_client_key("nobody")
    unknown = auth.client_assertion(stranger, "nobody-clinic", gateway.gateway.token_url, datetime.now(UTC))
    assert (await ask(gateway, unknown)).status_code == 401
    async with httpx.AsyncClient() as http:
        form = {**token_form(gateway.assertion("harbor-pt")), "grant_type": "password"}
        assert (await http.post(gateway.gateway.token_url, data=form)).status_code == 400


async def test_bearer_tokens_are_required_verified_and_scoped(gateway: Systems) -> None:
    url = f"{gateway.gateway.fhir}/Task"
    token = await gateway.token("harbor-pt")
    async with httpx.AsyncClient() as http:
        for authorization in (None, "Bearer not-a-token", f"Bearer {token[:-4]}AAAA", f"Basic {token}"):
            sent = {"Authorization": authorization} if authorization else {}
            answer = await http.get(url, headers=sent)
            assert answer.status_code == 401, authorization
            assert rejection_code(answer.json()) == "invalid_token"
        read_only = await gateway.token("harbor-pt", scope="system/Task.rs")
        refused = await http.post(url, json=new_task(), headers={"Authorization": f"Bearer {read_only}"})
        assert refused.status_code == 403
        assert rejection_code(refused.json()) == "insufficient_scope"
        assert (await http.get(url, headers={"Authorization": f"Bearer {read_only}"})).status_code == 200


async def test_a_token_for_one_clinic_never_reads_or_changes_another_clinics_task(gateway: Systems) -> None:
    harbor = await gateway.token("harbor-pt")
    knead = await gateway.token("kneadwell-massage")
    async with httpx.AsyncClient() as http:
        created = await http.post(
            f"{gateway.gateway.fhir}/Task", json=new_task(), headers={"Authorization": f"Bearer {harbor}"}
        )
        task = valid(created.json())
        url = f"{gateway.gateway.fhir}/Task/{task['id']}"
        theirs = await http.get(url, headers={"Authorization": f"Bearer {knead}"})
        missing = await http.get(
            f"{gateway.gateway.fhir}/Task/{uuid.uuid4()}", headers={"Authorization": f"Bearer {knead}"}
        )
        assert theirs.status_code == missing.status_code == 404
        assert rejection_code(theirs.json()) == rejection_code(missing.json()) == "not_found"
        changed = await http.put(
            url, json={**task, "status": "cancelled"}, headers={"Authorization": f"Bearer {knead}"}
        )
        assert changed.status_code == 404
        listed = await http.get(f"{gateway.gateway.fhir}/Task", headers={"Authorization": f"Bearer {knead}"})
        assert valid(listed.json())["total"] == 0
        # A Task naming another clinic as its requester is refused, not sent as that clinic.
        posing = await http.post(
            f"{gateway.gateway.fhir}/Task",
            json=new_task(requester="harbor-pt", recipient="lotus-acu"),
            headers={"Authorization": f"Bearer {knead}"},
        )
        assert posing.status_code == 403
        assert rejection_code(posing.json()) == "sender_mismatch"
