"""Every refusal is an OperationOutcome with a stable code and the HTTP status that fits."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from referral_hub.runtime.messaging import admission

from .conftest import Systems
from .fhir_helpers import new_task, rejection_code, valid

BSER = "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS"


async def send(
    systems: Systems, clinic: str, method: str, path: str, body: Any = None, raw: bytes | None = None
) -> httpx.Response:
    token = await systems.token(clinic)
    async with httpx.AsyncClient() as http:
        return await http.request(
            method,
            f"{systems.gateway.fhir}{path}",
            json=body if raw is None else None,
            content=raw,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
        )


def refused(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/fhir+json")
    assert rejection_code(answer.json()) == code


async def test_each_refusal_has_its_status_and_code(gateway: Systems) -> None:
    refused(await send(gateway, "harbor-pt", "POST", "/Task", raw=b"{not json"), 400, "malformed_json")
    refused(await send(gateway, "harbor-pt", "GET", "/Task?colour=blue"), 400, "unsupported")
    refused(await send(gateway, "harbor-pt", "GET", "/Task/does-not-exist"), 404, "not_found")
    refused(await send(gateway, "harbor-pt", "GET", "/Nothing/here"), 404, "not_found")
    refused(
        await send(gateway, "harbor-pt", "POST", "/Task", raw=b"[" + b"1," * 600_000 + b"1]"), 413, "message_too_large"
    )
    no_identifier = {k: v for k, v in new_task().items() if k != "identifier"}
    refused(await send(gateway, "harbor-pt", "POST", "/Task", no_identifier), 422, "schema_violation")
    refused(await send(gateway, "harbor-pt", "POST", "/Task", new_task(patient="x")), 422, "schema_violation")
    # Refused by the hub itself, its code carried through: a recipient that is not on the hub,
    # and one that does not offer the modality.
    refused(
        await send(gateway, "harbor-pt", "POST", "/Task", new_task(recipient="no-such-clinic")), 422, "unknown_clinic"
    )
    refused(await send(gateway, "harbor-pt", "POST", "/Task", new_task(modality="massage")), 422, "invalid_recipient")

    created = await send(gateway, "harbor-pt", "POST", "/Task", new_task())
    task = valid(created.json())
    # Completing a referral nobody accepted: the hub's invalid_transition, as 409.
    complete = {**task, "businessStatus": {"coding": [{"system": BSER, "code": "5.1.4"}]}, "status": "completed"}
    refused(await send(gateway, "lotus-acu", "PUT", f"/Task/{task['id']}", complete), 409, "invalid_transition")
    unchanged = await send(gateway, "lotus-acu", "GET", f"/Task/{task['id']}")
    assert valid(unchanged.json())["meta"]["versionId"] == "1"


@pytest.fixture
def one_per_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub's per-clinic rate: a burst of two, then one a minute (read when the hub starts)."""
    monkeypatch.setenv(admission.RATE_ENV, str(1 / 60))
    monkeypatch.setenv(admission.BURST_ENV, "2")


@pytest.mark.usefixtures("one_per_minute")
async def test_over_the_rate_limit_is_429_with_retry_after(gateway: Systems) -> None:
    answers = [await send(gateway, "harbor-pt", "POST", "/Task", new_task()) for _ in range(3)]
    assert [a.status_code for a in answers[:2]] == [201, 201]
    refused(answers[2], 429, "rate_limited")
    assert int(answers[2].headers["retry-after"]) >= 1
