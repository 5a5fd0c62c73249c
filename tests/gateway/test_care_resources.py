"""Care-team resources and audit over FHIR: CarePlan, CareTeam, Flag, DetectedIssue, AuditEvent; one hub, one gateway.

The module shares one secured hub, its services and one gateway process: harbor-pt refers
a patient to lotus-acu, which accepts, so both are on the patient's care team;
kneadwell-massage is registered with the gateway but not on that team. Every resource the
gateway returns is validated with fhir.resources' R4B models.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import nats
import pytest
import pytest_asyncio
from fhirpy import AsyncFHIRClient

from referral_hub.client import new_id, utc_now
from referral_hub.contracts.base import ClinicalFlags, Modality
from referral_hub.contracts.referrals import ReferralAccept, ReferralRequest
from referral_hub.gateway import auth
from referral_hub.gateway import care as care_rules
from referral_hub.gateway.adapters import register_client
from referral_hub.gateway.outcomes import FhirError, GatewayCode
from referral_hub.runtime.broker import credentials, permissions
from referral_hub.runtime.broker.embedded import free_port
from referral_hub.runtime.jetstream.provision import provision_as_operator
from referral_hub.runtime.jetstream.registry_cache import load_registry_file
from tests.conftest import SERVICE_FACTORIES, start_services
from tests.helpers import RunningHub, eventually, referral_request, secure_server
from tests.lifecycle_model import command

from .conftest import CLINICS, SYSTEMS, GatewayProcess, Systems
from .fhir_helpers import rejection_code, valid

pytestmark = pytest.mark.asyncio(loop_scope="module")

HARBOR, LOTUS, KNEAD = "harbor-pt", "lotus-acu", "kneadwell-massage"
PATIENT = "pt-care-0001"
HELD_PATIENT = "pt-care-0002"
PATIENT_SYSTEM = "urn:referral-hub:patient-ref"


@dataclass
class Care:
    """The module's hub and gateway, and the patient harbor-pt and lotus-acu share."""

    hub: RunningHub
    systems: Systems
    tokens: dict[str, str]

    def fhir(self, clinic: str) -> AsyncFHIRClient:
        return AsyncFHIRClient(self.systems.gateway.fhir, authorization=f"Bearer {self.tokens[clinic]}")

    def headers(self, clinic: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[clinic]}", "Content-Type": "application/fhir+json", **extra}

    async def call(self, method: str, clinic: str, path: str, body: Any = None, **extra: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=20) as http:
            return await http.request(
                method, f"{self.systems.gateway.fhir}/{path}", json=body, headers=self.headers(clinic, **extra)
            )


def plain(resource: Any) -> dict[str, Any]:
    serialize = getattr(resource, "serialize", None)
    return json.loads(json.dumps(serialize() if serialize else resource))


async def accept(hub: RunningHub, request: ReferralRequest) -> None:
    """lotus-acu, on plain NATS, accepts ``request``."""
    lotus = await hub.clinic(LOTUS)
    await lotus.send_and_confirm(
        ReferralAccept(
            message_id=new_id(),
            occurred_at=utc_now(),
            sender_clinic=LOTUS,
            actor="raj.patel",
            correlation_id=request.correlation_id,
            referral_id=request.referral_id,
            patient_ref=request.patient_ref,
        )
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def care(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Care]:
    """One secured hub, its services and a gateway process; harbor-pt and lotus-acu on PATIENT's care team."""
    tmp = tmp_path_factory.mktemp("care")
    with pytest.MonkeyPatch.context() as monkeypatch:
        server = secure_server(tmp, monkeypatch, CLINICS)
        server.start()
        tasks: list[asyncio.Task[None]] = []
        stop = asyncio.Event()
        process: GatewayProcess | None = None
        hub: RunningHub | None = None
        try:
            await provision_as_operator(server.url, registry=load_registry_file())
            admin = await nats.connect(server.url, **credentials.for_hub_user(permissions.ADMIN).connect_options())
            tasks, stop, ports = await start_services(server.url, SERVICE_FACTORIES)
            hub = RunningHub(server.url, admin, ports)
            keys = {}
            for clinic in SYSTEMS:
                private, jwks = auth.generate_client_key(f"{clinic}-care")
                actor = next(c for c in load_registry_file().clinics if c.id == clinic).members[0].id
                await register_client(admin.jetstream(), auth.ClientRecord(clinic=clinic, jwks=jwks, actor=actor))
                keys[clinic] = private
            options = ("--audit-index", str(tmp / "audit-index.sqlite"))
            process = GatewayProcess(server.url, free_port(), tmp / "gateway.log", options=options)
            await asyncio.to_thread(process.start)
            systems = Systems(process, keys)
            tokens = {clinic: await systems.token(clinic) for clinic in SYSTEMS}

            harbor = await hub.clinic(HARBOR)
            request = referral_request(HARBOR, LOTUS, patient_ref=PATIENT)
            await harbor.send_and_confirm(request)
            await accept(hub, request)
            yield Care(hub, systems, tokens)
        finally:
            if process is not None:
                await asyncio.to_thread(process.stop)
            if hub is not None:
                for client in hub.clients.values():
                    with contextlib.suppress(Exception):
                        await client.close()
                stop.set()
                await asyncio.gather(*tasks)
                await hub.connection.drain()
            server.stop()


def care_plan(version_goal: str, patient: str = PATIENT) -> dict[str, Any]:
    """harbor-pt's physiotherapy plan, as a clinic's system would write it."""
    return {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "category": [{"coding": [{"system": "urn:referral-hub:modality", "code": "physical_therapy"}]}],
        "subject": {"type": "Patient", "identifier": {"system": PATIENT_SYSTEM, "value": patient}},
        "period": {"start": "2026-12-01"},
        "contained": [
            {
                "resourceType": "Goal",
                "id": "g1",
                "lifecycleStatus": "active",
                "description": {"text": version_goal},
                "subject": {"identifier": {"system": PATIENT_SYSTEM, "value": patient}},
            }
        ],
        "goal": [{"reference": "#g1"}],
        "activity": [{"detail": {"status": "in-progress", "code": {"text": "neck mobilisation"}}}],
        "note": [{"text": "no heat packs"}],
        "extension": [{"url": "urn:referral-hub:StructureDefinition/plan-frequency", "valueString": "twice weekly"}],
    }


async def lotus_sees_plan(care: Care, plan_id: str, version: str) -> dict[str, Any] | None:
    """harbor-pt's plan as lotus-acu reads it, once it is at ``version``."""
    answer = await care.call("GET", LOTUS, f"CarePlan/{plan_id}")
    if answer.status_code != 200:
        return None
    plan = valid(answer.json())
    return plan if plan["meta"]["versionId"] == version else None


async def test_care_plan_versions_reach_the_care_team_and_a_stale_version_is_412(care: Care) -> None:
    created = await care.call("POST", HARBOR, "CarePlan", care_plan("walk 2 km"))
    assert created.status_code == 201, created.text
    plan = valid(created.json())
    assert created.headers["etag"] == 'W/"1"'
    plan_id = plan["id"]
    # Answered only once the hub confirmed it: the author reads its own plan back at once.
    own = await care.call("GET", HARBOR, f"CarePlan/{plan_id}")
    assert own.status_code == 200, own.text
    assert valid(own.json())["meta"]["versionId"] == "1"

    # lotus-acu, on the care team, reads harbor-pt's plan from its own inbox.
    first = await eventually(lambda: lotus_sees_plan(care, plan_id, "1"))
    assert first["contained"][0]["description"]["text"] == "walk 2 km"
    assert first["author"]["identifier"]["value"] == HARBOR
    found = await care.fhir(LOTUS).resources("CarePlan").search(patient=PATIENT).fetch_all()
    assert [valid(plain(p))["id"] for p in found] == [plan_id]

    updated = await care.call("PUT", HARBOR, f"CarePlan/{plan_id}", care_plan("walk 5 km"), **{"If-Match": 'W/"1"'})
    assert updated.status_code == 200, updated.text
    assert valid(updated.json())["meta"]["versionId"] == "2"
    own = await care.call("GET", HARBOR, f"CarePlan/{plan_id}")
    assert valid(own.json())["contained"][0]["description"]["text"] == "walk 5 km"
    await eventually(lambda: lotus_sees_plan(care, plan_id, "2"))

    # Another writer still holding version 1: refused by the hub, and the plan stays as it was.
    stale = await care.call("PUT", HARBOR, f"CarePlan/{plan_id}", care_plan("stay in bed"), **{"If-Match": 'W/"1"'})
    assert stale.status_code == 412, stale.text
    assert rejection_code(stale.json()) == "stale_plan_version"
    missing = await care.call("PUT", HARBOR, f"CarePlan/{plan_id}", care_plan("stay in bed"))
    assert missing.status_code == 428, missing.text
    assert rejection_code(missing.json()) == "stale_version"
    plan_now = await lotus_sees_plan(care, plan_id, "2")
    assert plan_now is not None
    assert plan_now["contained"][0]["description"]["text"] == "walk 5 km"

    # kneadwell-massage is not on the care team: the plan does not exist for it, and it cannot write one.
    assert (await care.call("GET", KNEAD, f"CarePlan/{plan_id}")).status_code == 404
    assert await care.fhir(KNEAD).resources("CarePlan").search(patient=PATIENT).fetch_all() == []
    outsider = await care.call("POST", KNEAD, "CarePlan", care_plan("massage"))
    assert outsider.status_code == 404, outsider.text
    assert rejection_code(outsider.json()) == "not_on_care_team"


async def test_care_team_is_read_only_and_only_for_its_members(care: Care) -> None:
    teams = await care.fhir(HARBOR).resources("CareTeam").search(patient=PATIENT).fetch_all()
    assert len(teams) == 1
    team = valid(plain(teams[0]))
    members = {p["member"]["identifier"]["value"]: p for p in team["participant"]}
    assert set(members) == {HARBOR, LOTUS}
    assert members[LOTUS]["role"][0]["coding"][0]["code"] == "acupuncture"
    assert members[HARBOR]["member"]["type"] == "Organization"
    assert all(p["period"]["start"] for p in members.values())

    read = await care.call("GET", LOTUS, f"CareTeam/{team['id']}")
    assert read.status_code == 200, read.text
    assert {p["member"]["identifier"]["value"] for p in valid(read.json())["participant"]} == {HARBOR, LOTUS}

    stranger = await care.call("GET", KNEAD, f"CareTeam/{team['id']}")
    assert stranger.status_code == 404
    assert rejection_code(stranger.json()) == "not_found"
    assert await care.fhir(KNEAD).resources("CareTeam").search(patient=PATIENT).fetch_all() == []

    for method, path in (("POST", "CareTeam"), ("PUT", f"CareTeam/{team['id']}"), ("DELETE", f"CareTeam/{team['id']}")):
        refused = await care.call(method, HARBOR, path, team)
        assert refused.status_code == 405, (method, refused.text)
        assert rejection_code(refused.json()) == "unsupported"


async def test_a_clinic_joining_a_team_sees_every_member_since_they_joined_and_their_plans(care: Care) -> None:
    patient = "pt-care-0003"
    founders = referral_request(HARBOR, LOTUS, patient_ref=patient)
    await (await care.hub.clinic(HARBOR)).send_and_confirm(founders)
    await accept(care.hub, founders)
    created = await care.call("POST", HARBOR, "CarePlan", care_plan("walk 2 km", patient))
    assert created.status_code == 201, created.text
    before = await care.fhir(HARBOR).resources("CareTeam").search(patient=patient).fetch_all()
    founded = {p["member"]["identifier"]["value"]: p["period"]["start"] for p in valid(plain(before[0]))["participant"]}

    joining = referral_request(LOTUS, KNEAD, patient_ref=patient, modality=Modality.MASSAGE)
    await (await care.hub.clinic(LOTUS)).send_and_confirm(joining)
    await (await care.hub.clinic(KNEAD)).send_and_confirm(command("accept", KNEAD, joining.referral_id, patient))

    [team] = await care.fhir(KNEAD).resources("CareTeam").search(patient=patient).fetch_all()
    since = {p["member"]["identifier"]["value"]: p["period"]["start"] for p in valid(plain(team))["participant"]}
    assert set(since) == {HARBOR, LOTUS, KNEAD}
    assert (since[HARBOR], since[LOTUS]) == (founded[HARBOR], founded[LOTUS])
    assert since[KNEAD] > since[HARBOR]
    [plan] = await care.fhir(KNEAD).resources("CarePlan").search(patient=patient).fetch_all()
    assert valid(plain(plan))["id"] == created.json()["id"]


async def test_a_plan_the_hub_does_not_confirm_is_503_never_a_guessed_success() -> None:
    with pytest.raises(FhirError) as unanswered:
        care_rules.plan_confirmation(None, 10)
    assert (unanswered.value.status, unanswered.value.code) == (503, GatewayCode.HUB_UNAVAILABLE)
    assert unanswered.value.headers == {"Retry-After": str(care_rules.PLAN_RETRY_AFTER_SECONDS)}
    assert "nothing is known to have changed" in str(unanswered.value)


def new_flag(severity: str = "relative") -> dict[str, Any]:
    return {
        "resourceType": "Flag",
        "status": "active",
        "extension": [
            {
                "url": "urn:referral-hub:StructureDefinition/alert-severity",
                "valueCodeableConcept": {"coding": [{"system": "urn:referral-hub:alert-severity", "code": severity}]},
            }
        ],
        "category": [{"coding": [{"system": "urn:referral-hub:modality", "code": "acupuncture"}]}],
        "code": {
            "coding": [{"system": "urn:referral-hub:alert-trigger-kind", "code": "medication"}],
            "text": "warfarin started",
        },
        "subject": {"type": "Patient", "identifier": {"system": PATIENT_SYSTEM, "value": PATIENT}},
    }


async def test_flag_raised_acknowledged_and_resolved_by_the_care_team(care: Care) -> None:
    raised = await care.call("POST", HARBOR, "Flag", new_flag())
    assert raised.status_code == 201, raised.text
    flag = valid(raised.json())
    assert flag["status"] == "active"
    assert flag["extension"][0]["valueCodeableConcept"]["text"].startswith("relative")

    async def lotus_flag() -> dict[str, Any] | None:
        answer = await care.call("GET", LOTUS, f"Flag/{flag['id']}")
        return valid(answer.json()) if answer.status_code == 200 else None

    seen = await eventually(lotus_flag)
    assert seen["author"]["identifier"]["value"] == HARBOR

    # lotus-acu acknowledges by adding an acknowledgement (its system user is the member).
    seen["extension"].append({"url": "urn:referral-hub:StructureDefinition/alert-acknowledgement"})
    acked = await care.call("PUT", LOTUS, f"Flag/{flag['id']}", seen, **{"If-Match": 'W/"1"'})
    assert acked.status_code == 200, acked.text
    assert valid(acked.json())["meta"]["versionId"] == "2"
    stale = await care.call("PUT", LOTUS, f"Flag/{flag['id']}", seen, **{"If-Match": 'W/"1"'})
    assert stale.status_code == 412

    # Only the raiser resolves it: lotus-acu is refused, harbor-pt resolves by a JSON Patch of status.
    resolve = [{"op": "replace", "path": "/status", "value": "inactive"}]
    refused = await care.call("PATCH", LOTUS, f"Flag/{flag['id']}", resolve)
    assert refused.status_code == 403, refused.text
    assert rejection_code(refused.json()) == "wrong_party"

    async def harbor_acked() -> bool:
        answer = await care.call("GET", HARBOR, f"Flag/{flag['id']}")
        return answer.status_code == 200 and answer.json()["meta"]["versionId"] == "2"

    await eventually(harbor_acked)
    resolved = await care.call("PATCH", HARBOR, f"Flag/{flag['id']}", resolve)
    assert resolved.status_code == 200, resolved.text
    assert valid(resolved.json())["status"] == "inactive"
    assert "end" in resolved.json()["period"]
    found = await care.fhir(HARBOR).resources("Flag").search(patient=PATIENT).fetch_all()
    assert [valid(plain(f))["id"] for f in found] == [flag["id"]]

    # Not on the care team: no such Flag.
    assert (await care.call("GET", KNEAD, f"Flag/{flag['id']}")).status_code == 404
    assert await care.fhir(KNEAD).resources("Flag").search(patient=PATIENT).fetch_all() == []


async def test_a_held_referral_is_a_detected_issue_and_its_override_the_mitigation(care: Care) -> None:
    harbor = await care.hub.clinic(HARBOR)
    request = referral_request(
        HARBOR,
        LOTUS,
        patient_ref=HELD_PATIENT,
        modality=Modality.ACUPUNCTURE,
        clinical_flags=ClinicalFlags(conditions=("haemophilia",)),
        requested_techniques=("needling",),
    )
    await harbor.send_and_confirm(request)

    async def issues(clinic: str) -> list[dict[str, Any]]:
        found = await care.fhir(clinic).resources("DetectedIssue").search(patient=HELD_PATIENT).fetch_all()
        return [valid(plain(i)) for i in found]

    issue = (await eventually(lambda: issues(LOTUS)))[0]
    assert issue["severity"] == "high"
    assert "bleeding-disorder-needling" in json.dumps(issue["evidence"])
    assert issue["detail"]

    # lotus-acu overrides the hold on its Task, with a reason: the mitigation.
    tasks = await care.fhir(LOTUS).resources("Task").search(patient=HELD_PATIENT).fetch_all()
    task = plain(tasks[0])
    assert task["status"] == "on-hold"
    task["status"] = "requested"
    task["statusReason"] = {"text": "platelets checked: normal"}
    overridden = await care.call("PUT", LOTUS, f"Task/{task['id']}", task)
    assert overridden.status_code == 200, overridden.text

    async def mitigated() -> dict[str, Any] | None:
        answer = await care.call("GET", HARBOR, f"DetectedIssue/{issue['id']}")
        current = valid(answer.json()) if answer.status_code == 200 else {}
        return current if current.get("mitigation") else None

    shown = await eventually(mitigated)
    assert "platelets checked: normal" in shown["mitigation"][0]["action"]["text"]
    assert shown["mitigation"][0]["author"]["identifier"]["value"] == LOTUS
    assert await issues(KNEAD) == []


async def test_care_scopes_and_capability(care: Care) -> None:
    read_only = await care.systems.token(HARBOR, scope="system/CarePlan.rs system/Flag.rs")
    async with httpx.AsyncClient() as http:
        refused = await http.post(
            f"{care.systems.gateway.fhir}/Flag",
            json=new_flag(),
            headers={"Authorization": f"Bearer {read_only}", "Content-Type": "application/fhir+json"},
        )
    assert refused.status_code == 403
    assert rejection_code(refused.json()) == "insufficient_scope"

    statement = valid((await care.call("GET", HARBOR, "metadata")).json())
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert {i["code"] for i in resources["CareTeam"]["interaction"]} == {"read", "search-type"}
    assert {i["code"] for i in resources["CarePlan"]["interaction"]} == {"read", "create", "update", "search-type"}
    assert {i["code"] for i in resources["Flag"]["interaction"]} == {"read", "create", "update", "patch", "search-type"}
    assert {i["code"] for i in resources["DetectedIssue"]["interaction"]} == {"read", "search-type"}
    assert {i["code"] for i in resources["AuditEvent"]["interaction"]} == {"search-type"}


CLINIC_SYSTEM = "urn:referral-hub:clinic"


def clinics_of(event: dict[str, Any]) -> set[str]:
    return {
        a["who"]["identifier"]["value"] for a in event["agent"] if a["who"]["identifier"]["system"] == CLINIC_SYSTEM
    }


def types_of(events: list[dict[str, Any]]) -> set[str]:
    return {e["subtype"][0]["code"] for e in events}


async def test_audit_event_search_returns_the_clinics_own_entries_only(care: Care) -> None:
    async def audit_events(clinic: str, count: int = 4, **search: str) -> list[dict[str, Any]]:
        """Every page, following the gateway's next links."""
        found = await care.fhir(clinic).resources("AuditEvent").search(**search).limit(count).fetch_all()
        return [valid(plain(event)) for event in found]

    async def with_accept() -> list[dict[str, Any]] | None:
        events = await audit_events(LOTUS, date="ge2020-01-01")
        return events if "referral.accept" in types_of(events) else None

    lotus = await eventually(with_accept)
    harbor = await audit_events(HARBOR, date="ge2020-01-01")
    assert "referral.request" in types_of(harbor)
    assert "referral.transitioned" in types_of(harbor)
    # lotus-acu's accept is lotus-acu's entry, never harbor-pt's; each sees only its own.
    assert "referral.accept" not in types_of(harbor)
    assert all(clinics_of(e) == {HARBOR} for e in harbor)
    assert all(clinics_of(e) == {LOTUS} for e in lotus)

    # Pages of 4 with next links hold what one page of 100 holds, oldest first.
    one_page = await care.call("GET", HARBOR, "AuditEvent?date=ge2020-01-01&_count=100")
    assert one_page.status_code == 200, one_page.text
    bundle = valid(one_page.json())
    ids = [e["resource"]["id"] for e in bundle["entry"]]
    assert len(ids) > 4
    assert ids[: len(harbor)] == [e["id"] for e in harbor][: len(ids)]
    assert ids == sorted(ids, key=int)
    paged = await care.call("GET", HARBOR, "AuditEvent?date=ge2020-01-01&_count=2")
    assert {link["relation"] for link in paged.json()["link"]} == {"self", "next"}

    # A date range excludes what is outside it; an unserved prefix (sa) and unknown parameters are refused.
    assert await audit_events(HARBOR, date="ge2099-01-01") == []
    assert (await care.call("GET", HARBOR, "AuditEvent?date=sa2026-01-01")).status_code == 400
    assert (await care.call("GET", HARBOR, "AuditEvent?clinic=lotus-acu")).status_code == 400
    no_scope = await care.systems.token(HARBOR, scope="system/Task.rs")
    async with httpx.AsyncClient() as http:
        refused = await http.get(
            f"{care.systems.gateway.fhir}/AuditEvent", headers={"Authorization": f"Bearer {no_scope}"}
        )
    assert refused.status_code == 403
