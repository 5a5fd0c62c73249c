"""The person behind a referral over FHIR: sent contained or bundled, read back as ``Patient`` by the parties only.

One secured hub, its services and a gateway process holding the clinics' sealing keys
(as ``hubctl up`` arranges); the clinics' systems are driven with fhirpy and the output
validated with fhir.resources' R4B models.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import nats
import pytest
import pytest_asyncio
from fhir.resources.R4B.patient import Patient
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import ResourceNotFound

from referral_hub.gateway import auth
from referral_hub.gateway.adapters import register_client
from referral_hub.runtime.broker import credentials, permissions
from referral_hub.runtime.broker.embedded import free_port
from referral_hub.runtime.jetstream.provision import provision_as_operator
from referral_hub.runtime.jetstream.registry_cache import load_registry_file, store_clinic
from referral_hub.sealing.keystore import KEYS_DIR_ENV, KeyStore
from tests.conftest import SERVICE_FACTORIES, start_services
from tests.helpers import RunningHub, eventually, secure_server

from .conftest import CLINICS, SYSTEMS, GatewayProcess, Systems
from .fhir_helpers import new_task, rejection_code, valid

pytestmark = pytest.mark.asyncio(loop_scope="module")

HARBOR, LOTUS, KNEAD = "harbor-pt", "lotus-acu", "kneadwell-massage"
PERSON: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "name": [{"family": "Fhirsample", "given": ["Testa", "Maria"]}],
    "birthDate": "1979-05-06",
    "gender": "female",
    "telecom": [{"system": "phone", "value": "+1 555 0100 2468"}, {"system": "email", "value": "testa@example.org"}],
    "address": [{"line": ["1 Example Way"], "city": "Sampletown", "postalCode": "00000", "country": "US"}],
}


@dataclass
class Fhir:
    systems: Systems
    tokens: dict[str, str]

    def client(self, clinic: str) -> AsyncFHIRClient:
        return AsyncFHIRClient(self.systems.gateway.fhir, authorization=f"Bearer {self.tokens[clinic]}")

    async def post(self, clinic: str, path: str, body: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[clinic]}", "Content-Type": "application/fhir+json"}
        async with httpx.AsyncClient(timeout=20) as http:
            return await http.post(f"{self.systems.gateway.fhir}/{path}", json=body, headers=headers)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fhir(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fhir]:
    tmp = tmp_path_factory.mktemp("patient-fhir")
    store = KeyStore(tmp / "sealing-keys")
    with pytest.MonkeyPatch.context() as monkeypatch:
        server = secure_server(tmp, monkeypatch, CLINICS)
        monkeypatch.setenv(KEYS_DIR_ENV, str(store.directory))
        server.start()
        tasks: list[asyncio.Task[None]] = []
        stop = asyncio.Event()
        process: GatewayProcess | None = None
        try:
            await provision_as_operator(server.url, registry=load_registry_file())
            admin = await nats.connect(server.url, **credentials.for_hub_user(permissions.ADMIN).connect_options())
            for clinic in load_registry_file().clinics:
                keyed = msgspec.structs.replace(clinic, sealing_keys=(store.generate(clinic.id).public,))
                await store_clinic(admin.jetstream(), keyed)
            tasks, stop, ports = await start_services(server.url, SERVICE_FACTORIES)
            hub = RunningHub(server.url, admin, ports)
            keys = {}
            for clinic in SYSTEMS:
                private, jwks = auth.generate_client_key(f"{clinic}-patient")
                actor = next(c for c in load_registry_file().clinics if c.id == clinic).members[0].id
                await register_client(admin.jetstream(), auth.ClientRecord(clinic=clinic, jwks=jwks, actor=actor))
                keys[clinic] = private
            process = GatewayProcess(server.url, free_port(), tmp / "gateway.log")
            await asyncio.to_thread(process.start)
            systems = Systems(process, keys)
            yield Fhir(systems, {clinic: await systems.token(clinic) for clinic in SYSTEMS})
        finally:
            if process is not None:
                await asyncio.to_thread(process.stop)
            stop.set()
            await asyncio.gather(*tasks)
            with contextlib.suppress(Exception):
                await hub.connection.drain()
            server.stop()


def task_with_contained(patient_ref: str) -> dict[str, Any]:
    task = new_task(LOTUS, patient_ref)
    task["contained"] = [PERSON]
    task["for"] = {**task["for"], "reference": "#p1"}
    return task


async def created_patient_id(fhir: Fhir, clinic: str, task: dict[str, Any]) -> str:
    created = await fhir.post(clinic, "Task", task)
    assert created.status_code == 201, created.text
    reference = valid(created.json())["for"]["reference"]
    assert reference.startswith("Patient/")
    return str(reference.removeprefix("Patient/"))


async def test_the_recipient_reads_a_contained_patient_as_a_valid_fhir_patient(fhir: Fhir) -> None:
    patient_id = await created_patient_id(fhir, HARBOR, task_with_contained("pt-fhir-0001"))
    patient = await eventually(lambda: _readable(fhir.client(LOTUS), "Patient", patient_id))
    resource = Patient.model_validate(patient)
    assert resource.name[0].family == "Fhirsample"
    assert [str(name) for name in resource.name[0].given] == ["Testa", "Maria"]
    assert str(resource.birthDate) == "1979-05-06"
    assert resource.gender == "female"
    assert [item.value for item in resource.telecom] == ["+1 555 0100 2468", "testa@example.org"]
    assert resource.address[0].city == "Sampletown"
    assert resource.identifier[0].value == "pt-fhir-0001"


async def test_the_service_request_subject_resolves_to_the_same_patient(fhir: Fhir) -> None:
    created = await fhir.post(HARBOR, "Task", task_with_contained("pt-fhir-0002"))
    task = valid(created.json())
    request_id = task["basedOn"][0]["reference"].removeprefix("urn:uuid:").rsplit("/", 1)[-1]
    service_request = await eventually(lambda: _readable(fhir.client(LOTUS), "ServiceRequest", request_id))
    assert valid(service_request)["subject"]["reference"] == task["for"]["reference"]


async def test_a_transaction_bundled_patient_is_sealed_like_a_contained_one(fhir: Fhir) -> None:
    task = new_task(LOTUS, "pt-fhir-0003")
    full_url = f"urn:uuid:{uuid.uuid4()}"
    task["for"] = {**task["for"], "reference": full_url}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": full_url, "resource": {**PERSON, "id": None}, "request": {"method": "POST", "url": "Patient"}},
            {"resource": task, "request": {"method": "POST", "url": "Task"}},
        ],
    }
    bundle["entry"][0]["resource"].pop("id")
    answer = await fhir.post(HARBOR, "", bundle)
    assert answer.status_code == 200, answer.text
    task_made = next(entry["resource"] for entry in answer.json()["entry"] if "resource" in entry)
    reference = task_made["for"]["reference"]
    patient = await eventually(lambda: _readable(fhir.client(LOTUS), "Patient", reference.removeprefix("Patient/")))
    assert patient["name"][0]["family"] == "Fhirsample"


async def test_a_clinic_outside_the_referral_gets_the_same_404_as_for_nothing(fhir: Fhir) -> None:
    patient_id = await created_patient_id(fhir, HARBOR, task_with_contained("pt-fhir-0004"))
    answers = []
    for wanted in (patient_id, str(uuid.uuid4())):
        async with httpx.AsyncClient(timeout=20) as http:
            answers.append(
                await http.get(
                    f"{fhir.systems.gateway.fhir}/Patient/{wanted}",
                    headers={"Authorization": f"Bearer {fhir.tokens[KNEAD]}"},
                )
            )
    assert [answer.status_code for answer in answers] == [404, 404]
    assert answers[0].text.replace(patient_id, "ID") == answers[1].text.replace(
        str(answers[1].url).rsplit("/", 1)[1], "ID"
    )
    with pytest.raises(ResourceNotFound):
        await fhir.client(KNEAD).reference("Patient", patient_id).to_resource()


async def test_a_patient_born_in_the_future_is_a_422_outcome(fhir: Fhir) -> None:
    task = task_with_contained("pt-fhir-0005")
    task["contained"] = [{**PERSON, "birthDate": "2999-01-01"}]
    answer = await fhir.post(HARBOR, "Task", task)
    assert answer.status_code == 422
    assert rejection_code(answer.json()) == "schema_violation"
    assert "in the future" in answer.text


async def _readable(client: AsyncFHIRClient, kind: str, resource_id: str) -> dict[str, Any] | None:
    """The resource once the recipient's inbox holds its referral (delivery is asynchronous), else ``None``."""
    try:
        return dict((await client.reference(kind, resource_id).to_resource()).serialize())
    except ResourceNotFound:
        return None
