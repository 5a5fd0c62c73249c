"""Referrals over FHIR: a clinic's system on HTTPS/FHIR refers to a clinic on plain NATS, and back.

Driven with fhirpy (an independent FHIR client) where it offers the interaction, plain
httpx for conditional headers; every resource the gateway returns is validated with
fhir.resources' R4B models.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
from fhirpy import AsyncFHIRClient

from referral_hub.client import new_id, utc_now
from referral_hub.contracts.referrals import ReferralAccept, ReferralRequested, ReferralTransitioned
from tests.helpers import RunningHub, eventually, referral_request

from .conftest import Systems
from .fhir_helpers import LOCAL_ID_SYSTEM, new_task, rejection_code, valid


def plain(resource: Any) -> dict[str, Any]:
    """fhirpy's resource (or AttrDict) as plain JSON."""
    serialize = getattr(resource, "serialize", None)
    return json.loads(json.dumps(serialize() if serialize else resource))


def headers(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json", **extra}


async def create(systems: Systems, token: str, task: dict[str, Any], **extra: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(f"{systems.gateway.fhir}/Task", json=task, headers=headers(token, **extra))


async def test_referral_from_fhir_to_a_nats_clinic_and_back(gateway: Systems, hub: RunningHub) -> None:
    token = await gateway.token("harbor-pt")
    fhir = AsyncFHIRClient(gateway.gateway.fhir, authorization=f"Bearer {token}")
    task = fhir.resource("Task", **new_task())
    await task.save()
    created = valid(plain(task))
    assert created["status"] == "requested"
    assert created["meta"]["versionId"] == "1"

    # lotus-acu is on plain NATS: it sees the referral in its inbox and accepts it there.
    lotus = await hub.clinic("lotus-acu")
    requested = [i async for i in lotus.inbox() if isinstance(i.message, ReferralRequested)]
    assert len(requested) == 1
    referral = requested[0].message
    await lotus.send_and_confirm(
        ReferralAccept(
            message_id=new_id(),
            occurred_at=utc_now(),
            sender_clinic="lotus-acu",
            actor="raj.patel",
            correlation_id=referral.correlation_id,
            referral_id=referral.referral_id,
            patient_ref=referral.patient_ref,
        )
    )

    async def accepted() -> dict[str, Any] | None:
        current = valid(plain(await fhir.get("Task", created["id"])))
        return current if current["status"] == "accepted" else None

    current = await eventually(accepted)
    assert current["businessStatus"]["coding"][0]["code"] == "3.0"
    assert current["meta"]["versionId"] == "2"

    # Search finds it by owner, status and patient; another status finds nothing.
    found = await fhir.resources("Task").search(owner="lotus-acu", status="accepted", patient="pt-0001").fetch_all()
    assert [t["id"] for t in found] == [created["id"]]
    assert await fhir.resources("Task").search(status="requested").fetch_all() == []

    # The other way round: kneadwell-massage (plain NATS) refers to lotus-acu, which answers over FHIR.
    knead = await hub.clinic("kneadwell-massage")
    back = referral_request("kneadwell-massage", "lotus-acu", patient_ref="pt-0002")
    await knead.send_and_confirm(back)
    lotus_token = await gateway.token("lotus-acu")
    lotus_fhir = AsyncFHIRClient(gateway.gateway.fhir, authorization=f"Bearer {lotus_token}")
    tasks = await lotus_fhir.resources("Task").search(requester="kneadwell-massage").fetch_all()
    assert len(tasks) == 1
    incoming = valid(plain(tasks[0]))
    incoming["status"] = "accepted"
    incoming["businessStatus"] = {
        "coding": [{"system": "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS", "code": "3.0"}]
    }
    async with httpx.AsyncClient() as http:
        answer = await http.put(
            f"{gateway.gateway.fhir}/Task/{incoming['id']}",
            json=incoming,
            headers=headers(lotus_token, **{"If-Match": 'W/"1"'}),
        )
    assert answer.status_code == 200, answer.text
    assert valid(answer.json())["status"] == "accepted"
    assert answer.headers["etag"] == 'W/"2"'
    steps = [i.message async for i in knead.inbox() if isinstance(i.message, ReferralTransitioned)]
    assert [(s.transition, s.referral_id) for s in steps] == [("accept", back.referral_id)]


async def test_if_none_exist_makes_a_retry_safe(gateway: Systems, hub: RunningHub) -> None:
    token = await gateway.token("harbor-pt")
    local = str(uuid.uuid4())
    task = new_task(local_id=local)
    condition = {"If-None-Exist": f"identifier={LOCAL_ID_SYSTEM}|{local}"}
    first = await create(gateway, token, task, **condition)
    again = await create(gateway, token, task, **condition)
    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    assert valid(first.json())["id"] == valid(again.json())["id"]
    lotus = await hub.clinic("lotus-acu")
    assert len([i async for i in lotus.inbox() if isinstance(i.message, ReferralRequested)]) == 1


async def test_stale_if_match_is_412_and_changes_nothing(gateway: Systems) -> None:
    harbor = await gateway.token("harbor-pt")
    lotus = await gateway.token("lotus-acu")
    created = (await create(gateway, harbor, new_task())).json()
    accept = {**created, "status": "accepted"}
    accept["businessStatus"] = {
        "coding": [{"system": "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS", "code": "3.0"}]
    }
    url = f"{gateway.gateway.fhir}/Task/{created['id']}"
    async with httpx.AsyncClient() as http:
        stale = await http.put(url, json=accept, headers=headers(lotus, **{"If-Match": 'W/"7"'}))
        assert stale.status_code == 412
        assert rejection_code(stale.json()) == "stale_version"
        unchanged = await http.get(url, headers=headers(lotus))
        assert valid(unchanged.json())["status"] == "requested"
        # As a JSON Patch with the right version, the same change goes through.
        patch = [
            {"op": "replace", "path": "/status", "value": "accepted"},
            {"op": "replace", "path": "/businessStatus", "value": accept["businessStatus"]},
        ]
        ok = await http.patch(
            url,
            json=patch,
            headers={**headers(lotus, **{"If-Match": 'W/"1"'}), "Content-Type": "application/json-patch+json"},
        )
        assert ok.status_code == 200, ok.text
        assert valid(ok.json())["meta"]["versionId"] == "2"
        # The sender may not accept its own referral: the hub's wrong_party, as 403.
        again = await http.put(
            url,
            json={
                **accept,
                "businessStatus": {
                    "coding": [
                        {"system": "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS", "code": "5.1.2"}
                    ]
                },
            },
            headers=headers(harbor),
        )
        assert again.status_code in {403, 409}, again.text
        assert rejection_code(again.json()) in {"wrong_party", "invalid_transition"}


async def test_a_transaction_bundle_creates_one_referral(gateway: Systems) -> None:
    token = await gateway.token("harbor-pt")
    task = new_task()
    task["focus"] = {"reference": "urn:uuid:0b8a3b0e-6f3e-4c43-9a55-1d8b1f3a0c11"}
    service_request = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "priority": "urgent",
        "code": {"coding": [{"system": "urn:referral-hub:modality", "code": "acupuncture"}]},
        "subject": task["for"],
        "reasonCode": [
            {"text": "Neck pain", "coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M54.2"}]}
        ],
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:0b8a3b0e-6f3e-4c43-9a55-1d8b1f3a0c11",
                "resource": service_request,
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
            {
                "fullUrl": "urn:uuid:5f0e9d7e-2a8c-4d1b-8e0f-3c6a7b9d1e22",
                "resource": task,
                "request": {"method": "POST", "url": "Task"},
            },
        ],
    }
    async with httpx.AsyncClient() as http:
        answer = await http.post(gateway.gateway.fhir, json=bundle, headers=headers(token))
        assert answer.status_code == 200, answer.text
        response = valid(answer.json())
        created = response["entry"][1]["resource"]
        service = await http.get(
            f"{gateway.gateway.fhir}/{created['basedOn'][0]['reference'].replace('urn:uuid:', 'ServiceRequest/')}",
            headers=headers(token),
        )
    assert service.status_code == 200, service.text
    read = valid(service.json())
    assert read["priority"] == "urgent"
    assert read["reasonCode"][0]["coding"][0]["code"] == "M54.2"


async def test_interim_notes_are_communications_both_parties_see(gateway: Systems) -> None:
    harbor = await gateway.token("harbor-pt")
    lotus = await gateway.token("lotus-acu")
    knead = await gateway.token("kneadwell-massage")
    task = valid((await create(gateway, harbor, new_task())).json())
    bser = "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS"
    accept = [
        {"op": "replace", "path": "/status", "value": "accepted"},
        {"op": "replace", "path": "/businessStatus", "value": {"coding": [{"system": bser, "code": "3.0"}]}},
    ]
    note = {
        "resourceType": "Communication",
        "status": "completed",
        "basedOn": [{"reference": f"Task/{task['id']}"}],
        "payload": [{"contentString": "Second session: headache frequency halved."}],
    }
    async with httpx.AsyncClient() as http:
        url = f"{gateway.gateway.fhir}/Task/{task['id']}"
        assert (await http.patch(url, json=accept, headers=headers(lotus))).status_code == 200
        made = await http.post(f"{gateway.gateway.fhir}/Communication", json=note, headers=headers(lotus))
        assert made.status_code == 201, made.text
        assert valid(made.json())["payload"][0]["contentString"] == note["payload"][0]["contentString"]

        async def seen_by_harbor() -> list[str]:
            found = await http.get(
                f"{gateway.gateway.fhir}/Communication",
                params={"based-on": f"Task/{task['id']}"},
                headers=headers(harbor),
            )
            return [e["resource"]["sender"]["identifier"]["value"] for e in valid(found.json())["entry"]]

        # harbor-pt's copy reaches its inbox a moment after lotus-acu's answer.
        assert await eventually(seen_by_harbor) == ["lotus-acu"]
        assert valid((await http.get(url, headers=headers(harbor))).json())["meta"]["versionId"] == "3"
        # Not a party: the Task is not known to it.
        stranger = await http.post(f"{gateway.gateway.fhir}/Communication", json=note, headers=headers(knead))
        assert stranger.status_code == 404
        assert rejection_code(stranger.json()) == "not_found"


async def test_the_capability_statement_lists_what_is_served(gateway: Systems) -> None:
    async with httpx.AsyncClient() as http:
        statement = valid((await http.get(f"{gateway.gateway.fhir}/metadata")).json())
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert set(resources) == {
        "Task",
        "ServiceRequest",
        "Patient",
        "Communication",
        "DocumentReference",
        "Binary",
        "Subscription",
        "CarePlan",
        "CareTeam",
        "Flag",
        "DetectedIssue",
    }
    assert {i["code"] for i in resources["Task"]["interaction"]} == {
        "read",
        "vread",
        "create",
        "update",
        "patch",
        "search-type",
    }
    assert {o["name"] for o in resources["Subscription"]["operation"]} == {"status", "events"}
