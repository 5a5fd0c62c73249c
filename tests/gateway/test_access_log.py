"""The gateway's log, as an operator reads it: one JSON object per line, an access line per request, no PHI."""

from __future__ import annotations

import json

import httpx
from fhirpy import AsyncFHIRClient

from .conftest import Systems
from .fhir_helpers import new_task

PATIENT = "pt-access-7781"
REASON = "Whiplash after a fall from a horse"


async def test_each_request_is_one_json_access_line_with_its_route_template_and_no_phi(gateway: Systems) -> None:
    token = await gateway.token("harbor-pt")
    fhir = AsyncFHIRClient(gateway.gateway.fhir, authorization=f"Bearer {token}")
    task = fhir.resource("Task", **{**new_task(patient=PATIENT), "reasonCode": {"text": REASON}, "description": REASON})
    await task.save()
    async with httpx.AsyncClient() as http:
        read = await http.get(f"{gateway.gateway.fhir}/Task/{task['id']}", headers={"Authorization": f"Bearer {token}"})
        searched = await http.get(
            f"{gateway.gateway.fhir}/Task", params={"patient": PATIENT}, headers={"Authorization": f"Bearer {token}"}
        )
    gateway.gateway.stop()

    text = gateway.gateway.log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    access = [line for line in lines if line.get("event") == "http_request"]

    assert (read.status_code, searched.status_code) == (200, 200)
    assert {(line["method"], line["route"], line["status"]) for line in access} >= {
        ("POST", "/fhir/Task", 201),
        ("GET", "/fhir/Task/{task_id}", 200),
        ("GET", "/fhir/Task", 200),
    }
    assert all(line.get("request_id") for line in access)
    assert [needle for needle in (PATIENT, REASON, "Whiplash", str(task["id"])) if needle in text] == []
