"""The Subscriptions Backport IG as an independent client (fhirpy) sees it, checked with fhir.resources.

One secured hub with its services and one gateway process for the module (its receivers are
on loopback, so it runs with ``--allow-private-hook-endpoints``); each test subscribes as a
clinic no other test here uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import pytest_asyncio
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.parameters import Parameters
from fhir.resources.R4B.subscription import Subscription
from fhirpy import AsyncFHIRClient

from referral_hub.gateway import auth
from referral_hub.gateway.adapters import register_client
from referral_hub.gateway.subscriptions import (
    DELIVERY_FAILED,
    FILTER_EXTENSION,
    HEARTBEAT_EXTENSION,
    TIMEOUT_EXTENSION,
    TOPIC_URL,
)
from referral_hub.runtime.broker import credentials, permissions
from referral_hub.runtime.broker.embedded import free_port
from referral_hub.runtime.jetstream.provision import provision_as_operator
from referral_hub.runtime.jetstream.registry_cache import load_registry_file
from tests.conftest import SERVICE_FACTORIES, start_services
from tests.helpers import RunningHub, eventually, referral_request, secure_server
from tests.http_receiver import Request, Server, answer, http_server, response

from .conftest import CLINICS, GatewayProcess, token_form

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Backport:
    hub: RunningHub
    gateway: GatewayProcess
    keys: dict[str, dict[str, Any]]

    async def fhir(self, clinic: str) -> AsyncFHIRClient:
        assertion = auth.client_assertion(self.keys[clinic], clinic, self.gateway.token_url, datetime.now(UTC))
        async with httpx.AsyncClient() as http:
            token = (await http.post(self.gateway.token_url, data=token_form(assertion))).json()["access_token"]
        return AsyncFHIRClient(self.gateway.fhir, authorization=f"Bearer {token}")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backport(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Backport]:
    directory = tmp_path_factory.mktemp("backport")
    with pytest.MonkeyPatch.context() as patch:
        server = secure_server(directory, patch, CLINICS)
        server.start()
        try:
            await provision_as_operator(server.url, registry=load_registry_file())
            admin = await nats.connect(server.url, **credentials.for_hub_user(permissions.ADMIN).connect_options())
            tasks, stop, ports = await start_services(server.url, SERVICE_FACTORIES)
            hub = RunningHub(server.url, admin, ports)
            keys = {}
            for clinic in load_registry_file().clinics:
                private, jwks = auth.generate_client_key(f"{clinic.id}-backport")
                record = auth.ClientRecord(clinic=clinic.id, jwks=jwks, actor=clinic.members[0].id)
                await register_client(admin.jetstream(), record)
                keys[clinic.id] = private
            gateway = GatewayProcess(server.url, free_port(), Path(directory) / "gateway.log")
            await asyncio.to_thread(gateway.start)
            try:
                yield Backport(hub, gateway, keys)
            finally:
                await asyncio.to_thread(gateway.stop)
                for client in hub.clients.values():
                    with contextlib.suppress(Exception):
                        await client.close()
                stop.set()
                await asyncio.gather(*tasks)
                await admin.drain()
        finally:
            server.stop()


def subscription(endpoint: str, *, heartbeat: int = 60, timeout: int | None = None, types: str = "") -> dict[str, Any]:
    extensions: list[dict[str, Any]] = [{"url": HEARTBEAT_EXTENSION, "valueUnsignedInt": heartbeat}]
    if timeout is not None:
        extensions.append({"url": TIMEOUT_EXTENSION, "valueUnsignedInt": timeout})
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "backport",
        "criteria": TOPIC_URL,
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json"},
    }
    resource["channel"]["extension"] = extensions
    if types:
        resource["_criteria"] = {"extension": [{"url": FILTER_EXTENSION, "valueString": f"message-type={types}"}]}
    return resource


async def create(fhir: AsyncFHIRClient, resource: dict[str, Any]) -> dict[str, Any]:
    fields = {name: value for name, value in resource.items() if name != "resourceType"}
    made = await fhir.resource("Subscription", **fields).save()
    created = plain(made)
    Subscription.model_validate(created)
    return dict(created)


def plain(resource: Any) -> dict[str, Any]:
    """fhirpy's resource (or AttrDict) as plain JSON."""
    return dict(json.loads(json.dumps(resource.serialize() if hasattr(resource, "serialize") else resource)))


def kinds(server: Server) -> list[str]:
    """The notification type of each request received, in order."""
    found = []
    for request in server.requests:
        status = json.loads(request.body)["entry"][0]["resource"]
        found.append(next(p["valueCode"] for p in status["parameter"] if p["name"] == "type"))
    return found


async def test_type_level_status_is_a_searchset_of_the_named_subscriptions(backport: Backport) -> None:
    fhir = await backport.fhir("summit-chiro")
    async with http_server(answer(200)) as receiver:
        first = await create(fhir, subscription(receiver.url))
        second = await create(fhir, subscription(receiver.url))
        named = await fhir.execute("Subscription/$status", method="get", params={"id": first["id"]})
        every = await fhir.execute("Subscription/$status", method="get")
    for bundle in (named, every):
        Bundle.model_validate(bundle)
        assert bundle["type"] == "searchset"
        for entry in bundle["entry"]:
            Parameters.model_validate(entry["resource"])

    def subscriptions(bundle: dict[str, Any]) -> list[str]:
        return sorted(
            p["valueReference"]["reference"].rsplit("/", 1)[1]
            for entry in bundle["entry"]
            for p in entry["resource"]["parameter"]
            if p["name"] == "subscription"
        )

    assert subscriptions(named) == [first["id"]]
    assert subscriptions(every) == sorted([first["id"], second["id"]])


async def test_backport_timeout_is_kept_and_honoured(backport: Backport) -> None:
    fhir = await backport.fhir("kneadwell-massage")

    async def slow(_request: Request, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(4)
        writer.write(response(200))
        await writer.drain()

    async with http_server(slow) as receiver:
        made = await create(fhir, subscription(receiver.url, timeout=1))
        timeouts = [e["valueUnsignedInt"] for e in made["channel"]["extension"] if e["url"] == TIMEOUT_EXTENSION]
        assert timeouts == [1]
        started = asyncio.get_running_loop().time()

        async def abandoned() -> dict[str, Any] | None:
            current = plain(await fhir.get("Subscription", made["id"]))
            return current if current.get("error") else None

        current = await eventually(abandoned, timeout=10, interval=0.1)
        # The receiver answers after 4 s; a timeout of 1 s gave up well before that.
        assert asyncio.get_running_loop().time() - started < 3.5
        assert receiver.requests
        assert current["error"] == DELIVERY_FAILED


async def test_heartbeats_keep_their_period_while_filtered_out_messages_flow(backport: Backport) -> None:
    fhir = await backport.fhir("lotus-acu")
    async with http_server(answer(200)) as receiver:
        await create(fhir, subscription(receiver.url, heartbeat=1, types="referral.transitioned"))
        await eventually(lambda: _value("handshake" in kinds(receiver)))
        sender = await backport.hub.clinic("harbor-pt")
        before = kinds(receiver).count("heartbeat")
        started = asyncio.get_running_loop().time()
        # A referral every 0.25 s for 3.5 s: all stored in lotus-acu's inbox, none of the filtered type.
        for number in range(14):
            await sender.send(referral_request("harbor-pt", "lotus-acu", patient_ref=f"pt-hb-{number:02d}"))
            await asyncio.sleep(max(0.0, started + 0.25 * (number + 1) - asyncio.get_running_loop().time()))
        heartbeats = kinds(receiver).count("heartbeat") - before
    assert heartbeats >= 2, kinds(receiver)
    assert "event-notification" not in kinds(receiver)


async def _value(value: Any) -> Any:
    return value


async def test_a_refusing_endpoint_and_a_closed_port_read_the_same(backport: Backport) -> None:
    """The hub is no port scanner: an endpoint that answers 501 and one nobody listens on look alike."""
    fhir = await backport.fhir("riverside-wellness")
    closed = free_port()
    async with http_server(answer(501)) as refusing:
        answered = await create(fhir, subscription(refusing.url))
        unanswered = await create(fhir, subscription(f"http://127.0.0.1:{closed}/"))

        async def errors() -> list[str] | None:
            found = [
                plain(await fhir.get("Subscription", made["id"])).get("error", "") for made in (answered, unanswered)
            ]
            return found if all(found) else None

        first, second = await eventually(errors, timeout=10, interval=0.1)
        assert refusing.requests
    assert first == second == DELIVERY_FAILED
