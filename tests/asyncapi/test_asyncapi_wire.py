"""The AsyncAPI document against real traffic: what a running hub stores and sends, checked by jsonschema.

A referral goes through the hub on a real nats-server, with a malformed submission beside it;
then every message stored in every hub stream, a heartbeat, an inbox read and its reply are
each matched to the document's channel by subject and to its message by ``type``, and
validated against that message's payload schema, resolved inside the document and nowhere
else. A max-deliveries advisory from a real server is checked against the server schema the
document declares for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import nats
import nats.errors
import pytest
import referencing
from jsonschema import Draft7Validator
from nats.aio.client import Client
from nats.js import api

from referral_hub.cli.asyncapi import asyncapi_document, channel_for_subject
from referral_hub.client import ClinicClient, new_id, utc_now
from referral_hub.contracts.codec import encode
from referral_hub.contracts.inbox import InboxPage, InboxRead
from referral_hub.contracts.referrals import ReferralAccept
from referral_hub.referrals import app as referrals_app
from referral_hub.runtime.broker.embedded import EmbeddedNats
from referral_hub.runtime.hosting.service import ServiceApp
from referral_hub.runtime.jetstream import streams, subjects
from tests.conftest import SERVICE_FACTORIES, start_services
from tests.helpers import eventually, referral_request, stream_messages, wait_idle

SENDER, RECIPIENT = "harbor-pt", "lotus-acu"
DOCUMENT_URI = "urn:referral-hub:asyncapi"
HUB_STREAMS = (
    streams.CLINIC_OUT,
    streams.CLINIC_IN,
    streams.HUB_EVENTS,
    streams.HUB_DEADLETTER,
    streams.AUDIT,
    streams.AUDIT_CHECKPOINTS,
)


class Described:
    """Finds a wire message's channel and message in the document and validates its payload."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource = referencing.Resource.from_contents(document, default_specification=referencing.jsonschema.DRAFT7)
        self.registry: referencing.Registry[Any] = referencing.Registry().with_resource(DOCUMENT_URI, resource)

    def _resolve(self, ref: str) -> dict[str, Any]:
        node: Any = self.document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert isinstance(node, dict)
        if "$ref" in node and not ref.startswith("#/components/schemas/"):
            return self._resolve(node["$ref"])
        return node

    def message(self, channel: str, type_tag: str) -> dict[str, Any]:
        """The channel's message whose ``name`` is ``type_tag`` (the one message of an untagged channel)."""
        messages = [self._resolve(ref["$ref"]) for ref in self.document["channels"][channel]["messages"].values()]
        if len(messages) == 1:
            return messages[0]
        (found,) = [message for message in messages if message["name"] == type_tag]
        return found

    def errors(self, channel: str, payload: bytes) -> list[str]:
        """Why ``payload`` does not match the channel's message for its type; empty if it does."""
        instance = json.loads(payload)
        message = self.message(channel, instance.get("type", "") if isinstance(instance, dict) else "")
        validator = Draft7Validator(
            {"$ref": DOCUMENT_URI + message["payload"]["$ref"]},
            registry=self.registry,
            format_checker=Draft7Validator.FORMAT_CHECKER,
        )
        return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(instance)]


def fills(address: str, parameters: dict[str, Any], subject: str) -> bool:
    """Whether ``subject`` is ``address`` with each ``{parameter}`` filled in: by one of its ``enum``
    values if it has them, else by one subject token."""

    def parameter(match: re.Match[str]) -> str:
        allowed = parameters[match.group(1)].get("enum")
        return "(?:" + "|".join(map(re.escape, allowed)) + ")" if allowed else "[^.]+"

    pattern = re.sub(r"\\\{(\w+)\\\}", parameter, re.escape(address))
    return re.fullmatch(pattern, subject) is not None


@pytest.fixture
async def hub_with_quick_heartbeats(nats_server: EmbeddedNats, provisioned: Client) -> AsyncIterator[Client]:
    """The three services on a real server, the referrals service sending heartbeats every 0.2 s."""

    def referrals(url: str) -> ServiceApp:
        return referrals_app.create_app(url, heartbeat_interval=0.2)

    tasks, stop, _ = await start_services(nats_server.url, {**SERVICE_FACTORIES, "referrals": referrals})
    yield provisioned
    stop.set()
    await asyncio.gather(*tasks)


async def test_everything_a_running_hub_stores_and_sends_matches_the_document(
    nats_server: EmbeddedNats, hub_with_quick_heartbeats: Client
) -> None:
    connection = hub_with_quick_heartbeats
    described = Described(json.loads(json.dumps(asyncapi_document())))
    sender = await ClinicClient.connect(nats_server.url, SENDER)
    recipient = await ClinicClient.connect(nats_server.url, RECIPIENT)
    heartbeat = await sender.connection.subscribe(subjects.clinic_heartbeat(SENDER))
    try:
        request = referral_request(SENDER, RECIPIENT)
        await sender.send_and_confirm(request)
        accept = ReferralAccept(
            message_id=new_id(),
            occurred_at=utc_now(),
            sender_clinic=RECIPIENT,
            actor="raj.patel",
            correlation_id=request.correlation_id,
            causation_id=request.message_id,
            referral_id=request.referral_id,
            patient_ref=request.patient_ref,
        )
        await recipient.send_and_confirm(accept)
        malformed = str(new_id())
        await sender.publish_raw("referral.request", b'{"type": "referral.request", "reason": 7}', msg_id=malformed)
        await eventually(lambda: stream_messages(connection, streams.HUB_DEADLETTER))
        await wait_idle(connection)

        wire: list[tuple[str, bytes]] = []
        for stream in HUB_STREAMS:
            wire += await stream_messages(connection, stream)
        beat = await heartbeat.next_msg(timeout=10)
        wire.append((beat.subject, beat.data))
        read = encode(InboxRead(after=0, limit=50))
        wire.append((subjects.inbox_read(SENDER), read))
        reply = await sender.connection.request(subjects.inbox_read(SENDER), read, timeout=5)
        wire.append((reply.subject, reply.data))
        assert msgspec.json.decode(reply.data, type=InboxPage).messages, "the sender's inbox holds its answers"
    finally:
        await heartbeat.unsubscribe()
        await sender.close()
        await recipient.close()

    refused = [(subject, data) for subject, data in wire if b'"reason": 7' in data and subject.startswith("clinic.")]
    assert len(refused) == 1, "the malformed submission is stored in CLINIC_OUT, once"
    checked: dict[str, int] = {}
    problems = []
    for subject, data in wire:
        channel = channel_for_subject(subject)
        assert channel is not None, f"no channel for {subject}"
        declared = described.document["channels"][channel]
        if declared["address"] is not None:
            assert fills(declared["address"], declared.get("parameters", {}), subject), (subject, declared["address"])
        errors = described.errors(channel, data)
        if (subject, data) in refused:
            assert errors, "the document refuses the submission the hub refused"
            continue
        problems += [f"{subject}: {error}" for error in errors]
        checked[channel] = checked.get(channel, 0) + 1

    assert problems == []
    assert {"clinicOut", "clinicIn", "clinicHeartbeat", "inboxRead", "inboxReadReply", "hubEvents"} <= set(checked)
    assert {"deadLetters", "auditEntries"} <= set(checked)
    assert checked["clinicOut"] == 2
    assert checked["clinicIn"] >= 3, "the two answers and the sender's rejection"


async def test_a_real_max_deliveries_advisory_matches_the_schema_the_document_declares(
    nats_server: EmbeddedNats,
) -> None:
    described = Described(json.loads(json.dumps(asyncapi_document())))
    connection = await nats.connect(nats_server.url)
    try:
        js = connection.jetstream()
        await js.add_stream(name="ADVISED", subjects=["advised.>"])
        await js.add_consumer(
            "ADVISED", api.ConsumerConfig(durable_name="gives-up", max_deliver=1, ack_policy=api.AckPolicy.EXPLICIT)
        )
        advisories = await connection.subscribe(subjects.MAX_DELIVERIES_ADVISORIES)
        await js.publish("advised.one", b"{}")
        pull = await js.pull_subscribe_bind("gives-up", "ADVISED")
        (delivered,) = await pull.fetch(1, timeout=5)
        await delivered.nak()
        # The server gives up when it would deliver again, so a second pull is what draws the advisory.
        again = asyncio.create_task(pull.fetch(1, timeout=10))
        advisory = await advisories.next_msg(timeout=10)
        again.cancel()
        with contextlib.suppress(asyncio.CancelledError, nats.errors.TimeoutError):
            await again
    finally:
        await connection.close()

    channel = channel_for_subject(advisory.subject)
    assert channel == "maxDeliveriesAdvisories"
    declared = described.document["channels"][channel]
    assert fills(declared["address"], declared["parameters"], advisory.subject)
    assert described.errors(channel, advisory.data) == []
    assert json.loads(advisory.data)["stream_seq"] == 1
