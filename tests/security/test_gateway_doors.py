"""A clinic with valid gateway credentials against the gateway's HTTP door.

One secured hub with its services and one ``hubctl run gateway`` process as production runs
it (rest-hooks to private addresses refused, a low per-client rate limit), shared by the
module (the portal's refusals are checked in tests/portal/test_portal_http.py). Each clinic
is used by one group of attacks, so the rate limit and the subscription cap of one group
never decide another's outcome.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio

from referral_hub.gateway import auth, scopes
from referral_hub.gateway.adapters import register_client
from referral_hub.gateway.subscriptions import DELIVERY_FAILED, MAX_PER_CLINIC, TOPIC_URL
from referral_hub.runtime.broker.embedded import free_port
from referral_hub.runtime.jetstream.registry_cache import load_registry_file
from tests.gateway.conftest import GatewayProcess, token_form
from tests.gateway.fhir_helpers import new_task, rejection_code, valid
from tests.helpers import eventually

from .hostile import AttackedHub, report

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKENS = "harbor-pt"
"""Token and request attacks."""
CEILED = "lotus-acu"
"""Registered with the ceiling :data:`CEILING`."""
CEILING = ("system/Task.rs", "system/Subscription.read")
THROTTLED = "kneadwell-massage"
"""Spends its rate limit."""
CAPPED = "summit-chiro"
"""Fills its subscription quota."""
HOOKS = "riverside-wellness"
"""Rest-hook endpoints and headers."""
RATE, BURST = 5, 40


@dataclass
class Doors:
    """The running gateway and the clinic systems' private keys."""

    gateway: GatewayProcess
    keys: dict[str, dict[str, Any]]

    def assertion(self, clinic: str, **claims: Any) -> str:
        return auth.client_assertion(self.keys[clinic], clinic, self.gateway.token_url, datetime.now(UTC), **claims)

    async def token_answer(self, clinic: str, scope: str = "", **claims: Any) -> httpx.Response:
        async with httpx.AsyncClient() as http:
            return await http.post(self.gateway.token_url, data=token_form(self.assertion(clinic, **claims), scope))

    async def token(self, clinic: str, scope: str = "") -> str:
        answer = await self.token_answer(clinic, scope)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])

    async def call(self, clinic: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {await self.token(clinic)}", **kwargs.pop("headers", {})}
        async with httpx.AsyncClient(timeout=20) as http:
            return await http.request(method, f"{self.gateway.fhir}{path}", headers=headers, **kwargs)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def doors(secured_hub: AttackedHub, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Doors]:
    directory = tmp_path_factory.mktemp("doors")
    members = {clinic.id: clinic.members[0].id for clinic in load_registry_file().clinics}
    keys = {}
    for clinic in (TOKENS, CEILED, THROTTLED, CAPPED, HOOKS):
        private, jwks = auth.generate_client_key(f"{clinic}-doors")
        ceiling = scopes.ceiling(CEILING) if clinic == CEILED else scopes.SUPPORTED_SCOPES
        record = auth.ClientRecord(clinic=clinic, jwks=jwks, actor=members[clinic], scopes=ceiling)
        await register_client(secured_hub.admin.jetstream(), record)
        keys[clinic] = private
    gateway = GatewayProcess(
        secured_hub.url,
        free_port(),
        directory / "gateway.log",
        options=("--rate-limit", str(RATE), "--rate-burst", str(BURST)),
        private_hooks=False,
    )
    await asyncio.to_thread(gateway.start)
    try:
        yield Doors(gateway, keys)
    finally:
        await asyncio.to_thread(gateway.stop)


def subscription(endpoint: str, headers: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "hostile",
        "criteria": TOPIC_URL,
        "channel": {"type": "rest-hook", "endpoint": endpoint, "header": list(headers)},
    }


async def until(probe: Callable[[], Awaitable[Any]], seconds: float = 20.0) -> Any:
    """Poll slowly (the module's clients are rate limited) until ``probe`` is truthy."""
    return await eventually(probe, timeout=seconds, interval=0.3)


# --- SMART scopes ------------------------------------------------------------------------------


async def test_v1_read_grants_read_and_search_and_never_delete(doors: Doors) -> None:
    answer = await doors.token_answer(TOKENS, "system/*.read")
    granted = answer.json()["scope"].split()
    report("token for system/*.read", "read and search only", answer.json()["scope"][:60])
    assert granted
    assert all(scope.partition(".")[2] in {"rs", "r", "s"} for scope in granted), granted


async def test_v1_write_grants_create_update_delete(doors: Doors) -> None:
    answer = await doors.token_answer(TOKENS, "system/Subscription.write")
    report("token for system/Subscription.write", "system/Subscription.cud", answer.json().get("scope", answer.text))
    assert answer.json()["scope"] == "system/Subscription.cud"


async def test_a_scope_narrowed_by_a_search_parameter_is_refused_not_widened(doors: Doors) -> None:
    answer = await doors.token_answer(TOKENS, "system/Task.rs?status=requested")
    report("token for system/Task.rs?status=requested", "400 invalid_scope", f"{answer.status_code} {answer.text[:60]}")
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_scope"


async def test_a_token_never_exceeds_the_clients_registered_ceiling(doors: Doors) -> None:
    asked = await doors.token_answer(CEILED, "system/Task.cruds system/Subscription.c system/Flag.r")
    unasked = await doors.token_answer(CEILED)
    report("token beyond the client's ceiling", "system/Task.rs system/Subscription.rs", asked.json().get("scope", ""))
    assert asked.json()["scope"] == "system/Task.rs"
    assert unasked.json()["scope"] == "system/Task.rs system/Subscription.rs"


async def test_smart_configuration_is_published(doors: Doors) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"{doors.gateway.fhir}/.well-known/smart-configuration")
    document = answer.json()
    assert answer.status_code == 200
    assert document["token_endpoint"] == doors.gateway.token_url
    assert document["grant_types_supported"] == ["client_credentials"]
    assert document["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert set(document["token_endpoint_auth_signing_alg_values_supported"]) == {"RS384", "ES384"}
    assert "system/Task.cruds" in document["scopes_supported"]


# --- Assertions and malformed requests ----------------------------------------------------------


@pytest.mark.parametrize("claim", ["iat", "nbf"])
async def test_an_assertion_dated_in_the_future_is_refused(doors: Doors, claim: str) -> None:
    later = int((datetime.now(UTC) + timedelta(minutes=10)).timestamp())
    answer = await doors.token_answer(TOKENS, **{claim: later})
    report(f"assertion with {claim} ten minutes ahead", "401 invalid_client", f"{answer.status_code}")
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"


@pytest.mark.parametrize("issuer", ["*", ">", "../harbor-pt", "harbor-pt.>"])
async def test_an_issuer_that_is_no_client_id_is_answered_as_an_unknown_one(doors: Doors, issuer: str) -> None:
    forged = await doors.token_answer(TOKENS, iss=issuer, sub=issuer)
    unknown = await doors.token_answer(TOKENS, iss="no-such-clinic", sub="no-such-clinic")
    report(f"assertion with iss {issuer!r}", "401 as for an unknown client", f"{forged.status_code}")
    assert (forged.status_code, forged.json()) == (401, unknown.json())


async def test_deeply_nested_json_is_a_400_operation_outcome(doors: Doors) -> None:
    depth = 200_000
    answer = await doors.call(
        TOKENS,
        "POST",
        "/Subscription",
        content=b"[" * depth + b"]" * depth,
        headers={"Content-Type": "application/fhir+json"},
    )
    report("JSON nested 200,000 deep", "400 OperationOutcome", f"{answer.status_code}")
    assert answer.status_code == 400
    assert rejection_code(answer.json()) == "malformed_json"


@pytest.mark.parametrize("wanted", ["../x", "sub.*", "$status", "a\r\nb"])
async def test_type_level_status_with_a_bad_id_is_404(doors: Doors, wanted: str) -> None:
    answer = await doors.call(TOKENS, "GET", "/Subscription/$status", params={"id": wanted})
    report(f"$status?id={wanted!r}", "404 OperationOutcome", f"{answer.status_code}")
    assert answer.status_code == 404
    assert rejection_code(answer.json()) == "not_found"


async def test_a_document_content_type_with_crlf_is_refused(doors: Doors) -> None:
    created = await doors.call(TOKENS, "POST", "/Task", json=new_task(requester=TOKENS, patient="pt-doors-01"))
    assert created.status_code == 201, created.text
    document = {
        "resourceType": "DocumentReference",
        "status": "current",
        "context": {"related": [{"reference": f"Task/{created.json()['id']}"}]},
        "content": [{"attachment": {"contentType": "text/html\r\nSet-Cookie: a=b", "data": "aGVsbG8="}}],
    }
    answer = await doors.call(TOKENS, "POST", "/DocumentReference", json=document)
    report("DocumentReference contentType with CRLF", "422 OperationOutcome", f"{answer.status_code}")
    assert answer.status_code == 422
    assert rejection_code(answer.json()) == "schema_violation"


async def test_a_client_over_its_rate_gets_429_with_retry_after(doors: Doors) -> None:
    token = await doors.token(THROTTLED)
    async with httpx.AsyncClient(timeout=30) as http:
        answers = await asyncio.gather(
            *(
                http.get(f"{doors.gateway.fhir}/Subscription/$status", headers={"Authorization": f"Bearer {token}"})
                for _ in range(BURST * 2)
            )
        )
    limited = [answer for answer in answers if answer.status_code == 429]
    report(f"{BURST * 2} requests at once, burst {BURST}", "429 with Retry-After", f"{len(limited)} answered 429")
    assert limited
    assert all(answer.headers["retry-after"] == "1" for answer in limited)
    assert rejection_code(valid(limited[0].json())) == "rate_limited"


async def test_gateway_refusals_carry_the_security_headers(doors: Doors) -> None:
    async with httpx.AsyncClient() as http:
        unknown = await http.get(f"{doors.gateway.fhir}/NoSuchType")
        unauthenticated = await http.get(f"{doors.gateway.fhir}/Task")
    for answer in (unknown, unauthenticated):
        assert answer.status_code in {401, 404}
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert answer.headers["cache-control"] == "no-store"


# --- Rest-hooks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "Content-Length: 0",
        "Host: nats-monitor.internal",
        "Transfer-Encoding: chunked",
        "Connection: keep-alive, Authorization",
        "X-Forwarded-For: 10.0.0.1",
        "X-Token: a\r\nHost: b",
    ],
)
async def test_a_subscription_header_outside_the_allow_list_is_refused(doors: Doors, header: str) -> None:
    resource = subscription("https://hooks.example.org/", (header,))
    answer = await doors.call(HOOKS, "POST", "/Subscription", json=resource)
    report(f"Subscription header {header!r}", "422", f"{answer.status_code}")
    assert answer.status_code == 422
    assert rejection_code(answer.json()) == "schema_violation"


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:8222/varz",
        "https://127.0.0.1:8222/",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "http://localhost:8222/",
    ],
)
async def test_an_endpoint_at_a_private_address_is_refused(doors: Doors, endpoint: str) -> None:
    answer = await doors.call(HOOKS, "POST", "/Subscription", json=subscription(endpoint))
    report(f"Subscription endpoint {endpoint}", "422", f"{answer.status_code}")
    assert answer.status_code == 422


async def test_a_host_name_resolving_to_loopback_is_never_connected(doors: Doors) -> None:
    connections: list[str] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(str(writer.get_extra_info("peername")))
        writer.close()

    listener = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        made = await doors.call(HOOKS, "POST", "/Subscription", json=subscription(f"https://localhost:{port}/"))
        assert made.status_code == 201, made.text

        async def failed() -> dict[str, Any] | None:
            current = (await doors.call(HOOKS, "GET", f"/Subscription/{made.json()['id']}")).json()
            return current if current.get("error") else None

        current = await until(failed)
        report("endpoint https://localhost:<listening port>", "no connection; generic error", f"{len(connections)}")
        assert connections == []
        assert current["error"] == DELIVERY_FAILED
    finally:
        listener.close()
        await listener.wait_closed()
        await doors.call(HOOKS, "DELETE", f"/Subscription/{made.json()['id']}")


async def test_a_clinic_holds_at_most_its_quota_of_subscriptions(doors: Doors) -> None:
    made = []
    for number in range(MAX_PER_CLINIC):
        answer = await doors.call(CAPPED, "POST", "/Subscription", json=subscription(f"https://h{number}.invalid/"))
        assert answer.status_code == 201, answer.text
        made.append(answer.json()["id"])
    over = await doors.call(CAPPED, "POST", "/Subscription", json=subscription("https://one-more.invalid/"))
    report(f"subscription number {MAX_PER_CLINIC + 1} of one clinic", "422 quota_exceeded", f"{over.status_code}")
    assert over.status_code == 422
    assert rejection_code(over.json()) == "quota_exceeded"
    assert (await doors.call(CAPPED, "DELETE", f"/Subscription/{made[0]}")).status_code == 200
    again = await doors.call(CAPPED, "POST", "/Subscription", json=subscription("https://one-more.invalid/"))
    assert again.status_code == 201


async def test_the_gateway_keeps_serving_after_every_hook_attack(doors: Doors) -> None:
    """Nothing above took a deliverer or the process down: a plain read still answers."""
    answer = await doors.call(HOOKS, "GET", "/Subscription/$status")
    assert answer.status_code == 200
    assert json.loads(answer.text)["type"] == "searchset"
