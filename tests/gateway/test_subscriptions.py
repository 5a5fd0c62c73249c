"""Rest-hook subscriptions on the clinic-inbox topic, against a real gateway process and a real receiver."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from referral_hub.client import new_id, utc_now
from referral_hub.contracts.referrals import ReferralAccept, ReferralRequested
from referral_hub.gateway.subscriptions import FILTER_EXTENSION, HEARTBEAT_EXTENSION, PAYLOAD_EXTENSION, TOPIC_URL
from tests.helpers import RunningHub, eventually, referral_request
from tests.http_receiver import Request, Server, answer, http_server, response

from .conftest import Systems
from .fhir_helpers import new_task, valid


def subscription(endpoint: str, payload: str = "id-only", heartbeat: int = 60, types: str = "") -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "referral updates",
        "criteria": TOPIC_URL,
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": PAYLOAD_EXTENSION, "valueCode": payload}]},
            "header": ["Authorization: Bearer receiver-secret"],
            "extension": [{"url": HEARTBEAT_EXTENSION, "valueUnsignedInt": heartbeat}],
        },
    }
    if types:
        resource["_criteria"] = {"extension": [{"url": FILTER_EXTENSION, "valueString": f"message-type={types}"}]}
    return resource


def status_of(bundle: dict[str, Any], bundle_type: str = "history") -> dict[str, Any]:
    """The SubscriptionStatus parameters of a notification (or ``$status``'s searchset), by name (events as a list)."""
    valid(bundle)
    assert bundle["type"] == bundle_type
    parameters = valid(bundle["entry"][0]["resource"])["parameter"]
    found: dict[str, Any] = {"events": []}
    for parameter in parameters:
        if parameter["name"] == "notification-event":
            found["events"].append(
                {part["name"]: next(v for k, v in part.items() if k.startswith("value")) for part in parameter["part"]}
            )
        else:
            found[parameter["name"]] = next(v for k, v in parameter.items() if k.startswith("value"))
    return found


def notifications(server: Server, kind: str = "event-notification") -> list[dict[str, Any]]:
    bundles = [json.loads(request.body) for request in server.requests if request.body]
    return [status_of(b) | {"bundle": b} for b in bundles if status_of(b)["type"] == kind]


def event_numbers(server: Server) -> list[int]:
    return [int(e["event-number"]) for n in notifications(server) for e in n["events"]]


def assert_each_event_once_by_number(server: Server, last: int) -> int:
    """What the Subscriptions IG lets a receiver rely on, checked on everything received.

    Every number from 1 to ``last`` arrives, in order, none skipped; a number may arrive
    again (at least once), but only right after itself and with the same content (the Bundle
    but for its ``timestamp``), so dropping a number already seen leaves each event exactly
    once. Returns how many repeats there were.
    """
    seen: list[tuple[int, dict[str, Any]]] = []
    for notice in notifications(server):
        (event,) = notice["events"]
        number = int(event["event-number"])
        content = {k: v for k, v in notice["bundle"].items() if k != "timestamp"}
        previous = seen[-1] if seen else (0, {})
        if number == previous[0]:
            assert content == previous[1], f"event {number} was sent again with different content"
        else:
            assert number == previous[0] + 1, f"after event {previous[0]} came {number}"
        seen.append((number, content))
    assert seen, "no event notification arrived"
    assert seen[-1][0] == last, f"delivered through {seen[-1][0]} of {last}"
    return len(seen) - last


async def subscribe(systems: Systems, clinic: str, resource: dict[str, Any]) -> dict[str, Any]:
    token = await systems.token(clinic)
    async with httpx.AsyncClient() as http:
        made = await http.post(
            f"{systems.gateway.fhir}/Subscription", json=resource, headers={"Authorization": f"Bearer {token}"}
        )
    assert made.status_code == 201, made.text
    return valid(made.json())


async def fhir_get(systems: Systems, clinic: str, path: str) -> dict[str, Any]:
    token = await systems.token(clinic)
    async with httpx.AsyncClient() as http:
        got = await http.get(f"{systems.gateway.fhir}{path}", headers={"Authorization": f"Bearer {token}"})
    assert got.status_code == 200, got.text
    return valid(got.json())


async def test_a_fhir_clinic_is_notified_when_a_nats_clinic_accepts(gateway: Systems, hub: RunningHub) -> None:
    async with http_server(answer(200)) as receiver:
        made = await subscribe(gateway, "harbor-pt", subscription(receiver.url, payload="full-resource"))
        await eventually(lambda: _async(notifications(receiver, "handshake")))
        assert receiver.requests[0].headers["authorization"] == "Bearer receiver-secret"

        token = await gateway.token("harbor-pt")
        async with httpx.AsyncClient() as http:
            created = await http.post(
                f"{gateway.gateway.fhir}/Task", json=new_task(), headers={"Authorization": f"Bearer {token}"}
            )
        task = valid(created.json())
        lotus = await hub.clinic("lotus-acu")
        (referral,) = [i.message async for i in lotus.inbox() if isinstance(i.message, ReferralRequested)]
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

        async def accepted() -> list[dict[str, Any]]:
            return [
                n
                for n in notifications(receiver)
                if any(e.get("additional-context", {}).get("display") == "referral.transitioned" for e in n["events"])
            ]

        notice = (await eventually(accepted))[0]
        # The event number is harbor-pt's own inbox number of that message.
        harbor = await hub.clinic("harbor-pt")
        stored = {i.event_number: i.message async for i in harbor.inbox()}
        number = int(notice["events"][0]["event-number"])
        assert type(stored[number]).__name__ == "ReferralTransitioned"
        assert notice["events"][0]["focus"]["reference"].endswith(f"/Task/{task['id']}")
        full = notice["bundle"]["entry"][1]["resource"]
        assert valid(full)["status"] == "accepted"
        assert notice["subscription"]["reference"].endswith(f"/Subscription/{made['id']}")
        numbers = event_numbers(receiver)
        assert numbers == sorted(set(numbers))
        assert [int(n["events-since-subscription-start"]) for n in notifications(receiver)] == list(
            range(1, len(numbers) + 1)
        )

        # $status and $events let the clinic check and catch up.
        status = status_of(await fhir_get(gateway, "harbor-pt", f"/Subscription/{made['id']}/$status"), "searchset")
        assert status["type"] == "query-status"
        assert status["status"] == "active"
        replay = status_of(
            await fhir_get(
                gateway,
                "harbor-pt",
                f"/Subscription/{made['id']}/$events?eventsSinceNumber={number}&eventsUntilNumber={number}",
            )
        )
        assert replay["type"] == "query-event"
        assert [int(e["event-number"]) for e in replay["events"]] == [number]
        # Without bounds: from the subscription's start to the inbox's newest, delivered or not yet.
        everything = status_of(await fhir_get(gateway, "harbor-pt", f"/Subscription/{made['id']}/$events"))
        replayed = [int(e["event-number"]) for e in everything["events"]]
        assert replayed[: len(numbers)] == numbers
        assert replayed == list(range(1, len(replayed) + 1))

    # Another clinic's token does not see this subscription.
    token = await gateway.token("lotus-acu")
    async with httpx.AsyncClient() as http:
        theirs = await http.get(
            f"{gateway.gateway.fhir}/Subscription/{made['id']}/$events", headers={"Authorization": f"Bearer {token}"}
        )
    assert theirs.status_code == 404


async def test_the_other_way_round_and_a_filter(gateway: Systems, hub: RunningHub) -> None:
    async with http_server(answer(200)) as receiver:
        await subscribe(gateway, "lotus-acu", subscription(receiver.url, types="referral.requested"))
        await eventually(lambda: _async(notifications(receiver, "handshake")))
        knead = await hub.clinic("kneadwell-massage")
        request = referral_request("kneadwell-massage", "lotus-acu", patient_ref="pt-0042")
        await knead.send_and_confirm(request)
        notice = (await eventually(lambda: _async(notifications(receiver))))[0]
        assert [e["additional-context"]["display"] for e in notice["events"]] == ["referral.requested"]
        assert len(notice["bundle"]["entry"]) == 2  # id-only: the status and the focus's URL
        assert "resource" not in notice["bundle"]["entry"][1]


async def _async(value: Any) -> Any:
    return value


async def test_a_failing_receiver_is_retried_with_backoff_and_loses_nothing(gateway: Systems, hub: RunningHub) -> None:
    failures = {"left": 3}

    async def flaky(request: Request, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        kind = status_of(json.loads(request.body))["type"]
        status = 503 if kind == "event-notification" and failures["left"] > 0 else 200
        if status == 503:
            failures["left"] -= 1
        writer.write(response(status))
        await writer.drain()

    async with http_server(flaky) as receiver:
        made = await subscribe(gateway, "lotus-acu", subscription(receiver.url))
        await eventually(lambda: _async(notifications(receiver, "handshake")))
        knead = await hub.clinic("kneadwell-massage")
        await knead.send_and_confirm(referral_request("kneadwell-massage", "lotus-acu", patient_ref="pt-0043"))

        async def in_error() -> bool:
            current = await fhir_get(gateway, "lotus-acu", f"/Subscription/{made['id']}")
            return bool(current["status"] == "error")

        await eventually(in_error)
        lotus = await hub.clinic("lotus-acu")
        last = await lotus.last_event_number()

        async def recovered() -> bool:
            current = await fhir_get(gateway, "lotus-acu", f"/Subscription/{made['id']}")
            return current["status"] == "active" and failures["left"] == 0

        await eventually(recovered, timeout=20)
        await eventually(lambda: _async(sorted(set(event_numbers(receiver))) == list(range(1, last + 1))), timeout=20)
        # Each failed number was sent again, unchanged, until acknowledged: in order, nothing skipped.
        assert assert_each_event_once_by_number(receiver, last) == 3


async def test_no_gap_across_a_kill_9_of_the_gateway(gateway: Systems, hub: RunningHub) -> None:
    async with http_server(answer(200)) as receiver:
        made = await subscribe(gateway, "lotus-acu", subscription(receiver.url))
        await eventually(lambda: _async(notifications(receiver, "handshake")))
        knead = await hub.clinic("kneadwell-massage")

        async def refer(count: int) -> None:
            for n in range(count):
                await knead.send(referral_request("kneadwell-massage", "lotus-acu", patient_ref=f"pt-k{n:04d}"))

        sending = asyncio.create_task(refer(30))
        await eventually(lambda: _async(len(event_numbers(receiver)) >= 10), timeout=20)
        await asyncio.to_thread(gateway.gateway.kill)  # mid-stream: no shutdown of any kind
        delivered_before = len(event_numbers(receiver))
        await sending
        await asyncio.to_thread(gateway.gateway.start)
        lotus = await hub.clinic("lotus-acu")

        async def everything() -> bool:
            last = await lotus.last_event_number()
            return last >= 30 and set(event_numbers(receiver)) == set(range(1, last + 1))

        try:
            await eventually(everything, timeout=30)
        except AssertionError:
            last = await lotus.last_event_number()
            missing = sorted(set(range(1, last + 1)) - set(event_numbers(receiver)))
            msg = f"inbox at {last}, never delivered: {missing[:20]}"
            raise AssertionError(msg) from None
        numbers = event_numbers(receiver)
        # At least once: the notification in flight at the kill may come twice, identical, so
        # a receiver dropping numbers it has seen gets every event exactly once.
        assert assert_each_event_once_by_number(receiver, max(numbers)) <= 1
        assert delivered_before < len(set(numbers))
        status = status_of(await fhir_get(gateway, "lotus-acu", f"/Subscription/{made['id']}/$status"), "searchset")
        assert int(status["events-since-subscription-start"]) == max(numbers)
