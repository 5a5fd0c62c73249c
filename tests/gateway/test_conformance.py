"""FHIR conformance as an independent client finds it: references resolve, creates say where, nothing is lost.

One hub and one gateway for the module (the care-resources fixture: harbor-pt and lotus-acu
on a patient's care team, AuditEvent served). fhirpy drives the API where it has the
interaction (create, read, search, resolving a reference), httpx where a header or a raw
URL is the point; fhir.resources' R4B models validate every resource returned.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from fhirpy.base.searchset import Raw

from referral_hub.gateway import care as care_rules
from referral_hub.gateway.subscriptions import TOPIC_URL
from tests.helpers import eventually

from .fhir_helpers import LOCAL_ID_SYSTEM, new_task, rejection_code, valid
from .test_care_resources import HARBOR, KNEAD, LOTUS, PATIENT, Care, care, care_plan, new_flag, plain

pytestmark = pytest.mark.asyncio(loop_scope="module")
__all__ = ["care"]  # the module's hub and gateway, shared with the care-resources tests' fixture

BSER = "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS"
SNOMED = {"system": "http://snomed.info/sct", "code": "229066000", "display": "Acupuncture (procedure)"}
MODALITY = {"system": "urn:referral-hub:modality", "code": "acupuncture"}


def ordered_task(local_id: str, patient: str = PATIENT) -> dict[str, Any]:
    """A Task as a clinic's system writes one: its own identifier, two codings, a note."""
    task = new_task(patient=patient, local_id=local_id)
    task["code"] = {"coding": [MODALITY, SNOMED]}
    task["note"] = [{"text": "prefers morning appointments"}]
    return task


async def create_task(care: Care, task: dict[str, Any]) -> dict[str, Any]:
    resource = care.fhir(HARBOR).resource("Task", **task)
    await resource.save()
    return valid(plain(resource))


async def move(care: Care, task: dict[str, Any], version: int, code: str, **fields: Any) -> dict[str, Any]:
    """lotus-acu moves the Task to BSeR ``code`` with a PUT, as its system would."""
    wanted = {**task, "businessStatus": {"coding": [{"system": BSER, "code": code}]}, **fields}
    answer = await care.call("PUT", LOTUS, f"Task/{task['id']}", wanted, **{"If-Match": f'W/"{version}"'})
    assert answer.status_code == 200, answer.text
    return valid(answer.json())


def references(node: Any) -> list[str]:
    """Every literal ``reference`` anywhere in a resource (contained ones, ``#...``, aside)."""
    if isinstance(node, dict):
        found = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return found + [ref for value in node.values() for ref in references(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in references(value)]
    return []


async def test_a_task_comes_back_with_its_identifier_codings_and_note(care: Care) -> None:
    local = str(uuid.uuid4())
    created = await create_task(care, ordered_task(local))
    assert {"system": LOCAL_ID_SYSTEM, "value": local} in created["identifier"]
    assert created["code"]["coding"] == [MODALITY, SNOMED]
    assert created["note"] == [{"text": "prefers morning appointments"}]
    service_request = valid(
        plain(await care.fhir(HARBOR).reference(reference=created["basedOn"][0]["reference"]).to_resource())
    )
    assert service_request["code"]["coding"] == [MODALITY, SNOMED]
    assert service_request["note"] == [{"text": "prefers morning appointments"}]


async def test_a_task_is_found_by_the_identifier_its_client_gave_it(care: Care) -> None:
    local = str(uuid.uuid4())
    created = await create_task(care, ordered_task(local))
    await create_task(care, ordered_task(str(uuid.uuid4())))
    found = await care.fhir(HARBOR).resources("Task").search(identifier=f"{LOCAL_ID_SYSTEM}|{local}").fetch_all()
    assert [valid(plain(task))["id"] for task in found] == [created["id"]]
    other_system = await care.fhir(HARBOR).resources("Task").search(identifier=f"urn:example:other|{local}").fetch_all()
    assert other_system == []


async def test_schedule_and_completion_come_back_as_sent(care: Care) -> None:
    accepted = await accepted_task(care)
    task = accepted
    period = {"start": "2026-12-10T09:00:00+01:00", "end": "2026-12-10T09:45:00+01:00"}
    scheduled = await move(care, accepted, 2, "5.1.1", executionPeriod=period)
    outputs = [
        {"type": {"text": "visits"}, "valueInteger": 6},
        {"type": {"text": "technique"}, "valueString": "dry needling"},
        {"type": {"text": "technique"}, "valueString": "cupping"},
        {"type": {"text": "response"}, "valueString": "headache days halved"},
        {"type": {"text": "recommendations"}, "valueString": "home exercises"},
    ]
    await move(care, scheduled, 3, "5.1.4", output=outputs)

    async def completed() -> dict[str, Any] | None:
        read = valid(plain(await care.fhir(HARBOR).get("Task", task["id"])))
        return read if read["meta"]["versionId"] == "4" else None

    read = await eventually(completed)
    as_instants = {key: datetime.fromisoformat(value) for key, value in read["executionPeriod"].items()}
    assert as_instants == {key: datetime.fromisoformat(value) for key, value in period.items()}
    assert read["output"] == outputs


async def test_every_reference_a_task_carries_resolves_with_a_get(care: Care) -> None:
    task = await create_task(care, ordered_task(str(uuid.uuid4())))
    found = references(task)
    assert found, "the Task names its ServiceRequest"
    for reference in found:
        resolved = valid(plain(await care.fhir(HARBOR).reference(reference=reference).to_resource()))
        assert f"{resolved['resourceType']}/{resolved['id']}" == reference


async def test_a_created_tasks_location_serves_that_version(care: Care) -> None:
    answer = await care.call("POST", HARBOR, "Task", ordered_task(str(uuid.uuid4())))
    assert answer.status_code == 201, answer.text
    location = answer.headers["location"]
    task = valid(answer.json())
    await move(care, valid(plain(await care.fhir(LOTUS).get("Task", task["id"]))), 1, "3.0", status="accepted")
    async with httpx.AsyncClient() as http:

        async def accepted_version() -> httpx.Response | None:
            # The accept reaches the referrer's inbox a moment after the recipient's answer.
            got = await http.get(location.replace("/_history/1", "/_history/2"), headers=care.headers(HARBOR))
            return got if got.status_code == 200 else None

        second = await eventually(accepted_version)
        first = await http.get(location, headers=care.headers(HARBOR))
        never = await http.get(location.replace("/_history/1", "/_history/3"), headers=care.headers(HARBOR))
    assert first.status_code == 200, first.text
    assert (valid(first.json())["meta"]["versionId"], first.json()["status"]) == ("1", "requested")
    assert (valid(second.json())["meta"]["versionId"], second.json()["status"]) == ("2", "accepted")
    assert never.status_code == 404
    assert rejection_code(never.json()) == "not_found"


def document(task_id: str) -> dict[str, Any]:
    data = base64.b64encode(b"%PDF-1.4 referral letter").decode()
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "content": [{"attachment": {"contentType": "application/pdf", "data": data}}],
        "context": {"related": [{"reference": f"Task/{task_id}"}]},
    }


def note(task_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "status": "completed",
        "basedOn": [{"reference": f"Task/{task_id}"}],
        "payload": [{"contentString": "second visit went well"}],
    }


def subscription() -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "referral updates",
        "criteria": TOPIC_URL,
        "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/hook", "payload": "application/fhir+json"},
    }


async def accepted_task(care: Care, patient: str = PATIENT) -> dict[str, Any]:
    """A referral harbor-pt made and lotus-acu accepted: both are on the patient's care team."""
    task = await create_task(care, ordered_task(str(uuid.uuid4()), patient=patient))
    return await move(care, valid(plain(await care.fhir(LOTUS).get("Task", task["id"]))), 1, "3.0", status="accepted")


@pytest.mark.parametrize("kind", ["Communication", "DocumentReference", "Flag", "Subscription", "CarePlan"])
async def test_a_create_answers_with_a_location_that_resolves(care: Care, kind: str) -> None:
    patient = f"pt-loc-{uuid.uuid4().hex[:8]}"
    task = await accepted_task(care, patient)
    bodies = {
        "Communication": lambda: note(task["id"]),
        "DocumentReference": lambda: document(task["id"]),
        "Flag": new_flag,
        "Subscription": subscription,
        "CarePlan": lambda: care_plan("walk 1 km", patient=patient),
    }
    body = bodies[kind]()
    author = LOTUS if kind == "Communication" else HARBOR  # an interim note is the recipient's
    created = await care.call("POST", author, kind, body)
    assert created.status_code == 201, created.text
    async with httpx.AsyncClient() as http:
        read = await http.get(created.headers["location"], headers=care.headers(author))
    assert read.status_code == 200, read.text
    assert valid(read.json())["id"] == valid(created.json())["id"]


@pytest.mark.parametrize("kind", ["Communication", "DocumentReference"])
async def test_every_reference_a_created_resource_carries_resolves_with_a_get(care: Care, kind: str) -> None:
    task = await accepted_task(care)
    body = note(task["id"]) if kind == "Communication" else document(task["id"])
    created = await care.call("POST", LOTUS, kind, body)
    assert created.status_code == 201, created.text
    found = [reference for reference in references(valid(created.json())) if not reference.startswith("#")]
    assert found, f"the {kind} names its Task"
    for reference in found:
        resolved = valid(plain(await care.fhir(LOTUS).reference(reference=reference).to_resource()))
        assert f"{resolved['resourceType']}/{resolved['id']}" == reference


async def test_a_transaction_answers_in_its_order_with_locations_and_rewritten_references(care: Care) -> None:
    request_url = f"urn:uuid:{uuid.uuid4()}"
    task = ordered_task(str(uuid.uuid4()))
    task["basedOn"] = [{"reference": request_url}]
    service_request = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "code": {"coding": [MODALITY]},
        "subject": task["for"],
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": request_url,
                "resource": service_request,
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
            {"resource": task, "request": {"method": "POST", "url": "Task"}},
        ],
    }
    async with httpx.AsyncClient() as http:
        posted = await http.post(care.systems.gateway.fhir, json=bundle, headers=care.headers(HARBOR))
    assert posted.status_code == 200, posted.text
    answer = valid(posted.json())
    assert answer["type"] == "transaction-response"
    kinds = [entry["resource"]["resourceType"] for entry in answer["entry"]]
    assert kinds == ["ServiceRequest", "Task"]
    async with httpx.AsyncClient() as http:
        for entry in answer["entry"]:
            assert entry["response"]["status"] == "201 Created"
            read = await http.get(
                f"{care.systems.gateway.fhir}/{entry['response']['location']}", headers=care.headers(HARBOR)
            )
            assert read.status_code == 200, read.text
            assert valid(read.json())["id"] == entry["resource"]["id"]
    stored_request = answer["entry"][0]["resource"]
    assert answer["entry"][1]["resource"]["basedOn"][0]["reference"] == f"ServiceRequest/{stored_request['id']}"


async def test_xml_asked_by_accept_is_406(care: Care) -> None:
    answer = await care.call("GET", HARBOR, "Task", Accept="application/fhir+xml")
    assert answer.status_code == 406
    assert rejection_code(answer.json()) == "unsupported"


async def test_xml_asked_by_format_is_406(care: Care) -> None:
    answer = await care.call("GET", HARBOR, "Task?_format=xml")
    assert answer.status_code == 406
    assert rejection_code(answer.json()) == "unsupported"


async def test_a_search_takes_format_json(care: Care) -> None:
    created = await create_task(care, ordered_task(str(uuid.uuid4())))
    found = await care.fhir(HARBOR).resources("Task").search(_format="json", owner=LOTUS).fetch_all()
    assert created["id"] in [valid(plain(task))["id"] for task in found]


async def test_a_search_by_owner_identifier(care: Care) -> None:
    created = await create_task(care, ordered_task(str(uuid.uuid4())))
    search = care.fhir(HARBOR).resources("Task")
    found = await search.search(Raw(**{"owner:identifier": f"urn:referral-hub:clinic|{LOTUS}"})).fetch_all()
    assert created["id"] in [valid(plain(task))["id"] for task in found]
    elsewhere = await search.search(Raw(**{"owner:identifier": f"urn:referral-hub:clinic|{HARBOR}"})).fetch_all()
    assert elsewhere == []


async def test_a_task_search_by_a_date_without_prefix_is_that_day(care: Care) -> None:
    created = await create_task(care, ordered_task(str(uuid.uuid4())))
    day = created["meta"]["lastUpdated"][:10]
    search = care.fhir(HARBOR).resources("Task")
    found = await search.search(_lastUpdated=day).fetch_all()
    assert created["id"] in [valid(plain(task))["id"] for task in found]
    assert await search.search(_lastUpdated="2020-01-01").fetch_all() == []


async def test_an_audit_search_by_a_date_without_prefix_is_that_day(care: Care) -> None:
    search = care.fhir(HARBOR).resources("AuditEvent")
    every = [valid(plain(event)) for event in await search.search(date="ge2020-01-01").limit(100).fetch_all()]
    day = every[0]["period"]["start"][:10]
    found = [valid(plain(event)) for event in await search.search(date=day).limit(100).fetch_all()]
    assert all(event["period"]["start"][:10] == day for event in found)
    assert {e["id"] for e in every if e["period"]["start"][:10] == day} <= {e["id"] for e in found}
    assert await search.search(date="2020-01-01").fetch_all() == []


async def test_a_care_plan_put_without_if_match_creates_it(care: Care) -> None:
    patient = f"pt-put-{uuid.uuid4().hex[:8]}"
    await accepted_task(care, patient)
    plan_id = care_rules.care_plan_id(patient, HARBOR)
    body = {**care_plan("walk 3 km", patient=patient), "id": plan_id}
    put = await care.call("PUT", HARBOR, f"CarePlan/{plan_id}", body)
    assert put.status_code == 201, put.text
    assert valid(put.json())["meta"]["versionId"] == "1"


async def test_binary_asked_for_fhir_json_is_a_binary_resource(care: Care) -> None:
    task = await create_task(care, ordered_task(str(uuid.uuid4())))
    created = valid((await care.call("POST", HARBOR, "DocumentReference", document(task["id"]))).json())
    url = created["content"][0]["attachment"]["url"]
    async with httpx.AsyncClient() as http:
        resource = await http.get(url, headers={**care.headers(HARBOR), "Accept": "application/fhir+json"})
        raw = await http.get(url, headers={**care.headers(HARBOR), "Accept": "*/*"})
    binary = valid(resource.json())
    assert (binary["resourceType"], binary["contentType"]) == ("Binary", "application/pdf")
    assert base64.b64decode(binary["data"]) == raw.content == b"%PDF-1.4 referral letter"


async def test_a_non_party_gets_for_each_new_read_what_a_missing_resource_gets(care: Care) -> None:
    task = await accepted_task(care)
    noted = await care.call("POST", LOTUS, "Communication", note(task["id"]))
    stored = await care.call("POST", HARBOR, "DocumentReference", document(task["id"]))
    communication, reference = valid(noted.json()), valid(stored.json())
    service_request = task["basedOn"][0]["reference"].rpartition("/")[2]
    missing = str(uuid.uuid4())
    paths = [
        ("Task/{}/_history/1", task["id"]),
        ("ServiceRequest/{}/_history/1", service_request),
        ("ServiceRequest/{}", service_request),
        ("Communication/{}", communication["id"]),
        ("Communication/{}/_history/1", communication["id"]),
        ("Binary/{}", reference["id"]),
    ]
    for template, existing in paths:
        answers = []
        for resource_id in (existing, missing):
            answer = await care.call("GET", KNEAD, template.format(resource_id), Accept="application/fhir+json")
            assert answer.status_code == 404, template
            assert rejection_code(answer.json()) == "not_found", template
            answers.append(answer.text.replace(resource_id, "<id>"))
        assert answers[0] == answers[1], template
