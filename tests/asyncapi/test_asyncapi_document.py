"""`hubctl contracts export`'s asyncapi.json, parsed by the official @asyncapi/parser and held to the topology.

The parser runs in node (``validate.mjs`` beside this file) from the packages ``make node``
installs from package-lock.json; without them these tests fail, they never skip. The rest
checks the document against the tables it is declared from: every durable consumer, every
stream, every subject family, and the subscribers faststream sees in the services' wiring.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from referral_hub.audit import app as audit_app
from referral_hub.cli.asyncapi import CHANNELS, asyncapi_document, channel_for_subject
from referral_hub.contracts.base import message_type
from referral_hub.contracts.codec import COMMAND_TYPES, HUB_MESSAGE_TYPES
from referral_hub.contracts.compat import current_components
from referral_hub.notifications import app as notifications_app
from referral_hub.referrals import app as referrals_app
from referral_hub.runtime.jetstream import subjects, topology
from referral_hub.runtime.messaging import inbox_reads
from tests.helpers import hubctl

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = Path(__file__).with_name("validate.mjs")
PARSER = ROOT / "node_modules" / "@asyncapi" / "parser" / "package.json"


def official_parser(document: Path) -> dict[str, Any]:
    """The parser's report on ``document``: diagnostics, their counts, and what it parsed."""
    node = shutil.which("node")
    assert node is not None, "node is not installed: the AsyncAPI document cannot be checked"
    assert PARSER.is_file(), f"{PARSER} is missing: run `make node` (part of `make test`)"
    finished = subprocess.run(  # noqa: S603 - node and a script of this repository, on a file this test wrote
        [node, str(VALIDATOR), str(document)], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    assert finished.returncode in {0, 1}, f"validate.mjs failed to run ({finished.returncode}): {finished.stderr}"
    report: dict[str, Any] = json.loads(finished.stdout)
    return report


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """asyncapi.json exactly as a user's `hubctl contracts export --out DIR` writes it."""
    directory = tmp_path_factory.mktemp("export")
    finished = subprocess.run(  # noqa: S603 - this repository's CLI, as a user runs it
        [sys.executable, "-m", "referral_hub.cli", "contracts", "export", "--out", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    return directory / "asyncapi.json"


def test_the_exported_document_parses_without_a_single_diagnostic(exported: Path) -> None:
    report = official_parser(exported)
    document = json.loads(exported.read_text())

    assert report["diagnostics"] == []
    assert report["counts"] == {"error": 0, "warning": 0, "information": 0, "hint": 0}
    assert report["document"]["asyncapi"] == document["asyncapi"]
    assert report["document"]["channels"] == len(document["channels"]) == len(CHANNELS)
    assert report["document"]["operations"] == len(document["operations"])


def test_the_parser_finds_a_dangling_payload_reference(tmp_path: Path) -> None:
    """The fault the document once had: a payload naming a schema that is not there."""
    document = asyncapi_document()
    document["components"]["messages"]["PageAck"]["payload"] = {"$ref": "#/components/schemas/EmptyPayload"}
    planted = tmp_path / "asyncapi.json"
    planted.write_text(json.dumps(document))

    report = official_parser(planted)

    assert report["document"] is None
    assert [(d["code"], d["message"]) for d in report["diagnostics"] if d["severity"] == "error"] == [
        ("invalid-ref", "'#/components/schemas/EmptyPayload' does not exist")
    ]


async def test_hubctl_writes_the_document_the_module_builds(tmp_path: Path) -> None:
    result = await hubctl("contracts", "export", "--out", str(tmp_path))

    assert result.status == 0, result.stderr
    assert json.loads((tmp_path / "asyncapi.json").read_text()) == json.loads(json.dumps(asyncapi_document()))


def _resolve(document: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    assert isinstance(node, dict)
    return node


def _messages_of(document: dict[str, Any], operation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The messages an operation names, by their ``name`` (the wire ``type`` tag), dereferenced."""
    found = {}
    for ref in operation["messages"]:
        message = _resolve(document, ref["$ref"])
        message = _resolve(document, message["$ref"]) if "$ref" in message else message
        found[message["name"]] = message
    return found


def test_every_durable_consumer_is_a_receive_operation_on_the_channel_its_filter_covers() -> None:
    document = asyncapi_document()
    operations = document["operations"]

    for spec in topology.CONSUMERS:
        operation = operations[spec.durable]
        assert operation["action"] == "receive"
        assert operation["x-jetstream"] == {
            "stream": spec.stream,
            "durable": spec.durable,
            "filterSubject": spec.filter_subject,
            "filterSubjects": list(spec.only),
            "ackPolicy": "explicit",
            "maxDeliver": spec.max_deliver,
            "ackWaitSeconds": topology.ACK_WAIT_SECONDS,
        }
        channel = _resolve(document, operation["channel"]["$ref"])
        assert channel["x-jetstream-stream"] == spec.stream
        assert operation["channel"]["$ref"] == f"#/channels/{channel_for_subject(spec.filter_subject)}"
        for subject in spec.only:
            assert channel_for_subject(subject) == channel_for_subject(spec.filter_subject)


def test_each_consumer_names_exactly_the_messages_it_handles() -> None:
    document = asyncapi_document()
    operations = document["operations"]
    commands = {message_type(kind) for kind in COMMAND_TYPES}

    assert set(_messages_of(document, operations["referrals-intake"])) == commands - {"page.ack"}
    assert set(_messages_of(document, operations["notifications-page-acks"])) == {"page.ack"}
    assert set(_messages_of(document, operations["notifications-events"])) == {
        subject.removeprefix("hub.event.") for subject in topology.NOTIFICATIONS_EVENTS.only
    }
    for spec in topology.AUDIT_CONSUMERS:
        channel = _resolve(document, operations[spec.durable]["channel"]["$ref"])
        assert len(operations[spec.durable]["messages"]) == len(channel["messages"]), spec.durable


def test_page_ack_is_declared_with_its_contract_not_an_empty_payload() -> None:
    document = asyncapi_document()

    (page_ack,) = _messages_of(document, document["operations"]["notifications-page-acks"]).values()

    assert page_ack["payload"] == {"$ref": "#/components/schemas/PageAck"}
    schema = document["components"]["schemas"]["PageAck"]
    assert schema == current_components()["PageAck"]
    assert {"page_id", "type", "message_id"} <= set(schema["required"])
    assert "EmptyPayload" not in json.dumps(document)


def test_every_stream_is_a_channel_with_its_subject() -> None:
    channels = asyncapi_document()["channels"]
    declared = {(channel.get("x-jetstream-stream"), channel["x-nats-subject"]) for channel in channels.values()}

    for config in topology.stream_configs():
        (subject,) = config.subjects or []
        assert (config.name, subject) in declared


def test_channel_addresses_are_the_subjects_the_services_use() -> None:
    channels = asyncapi_document()["channels"]

    assert channels["clinicOut"]["address"] == subjects.clinic_out("{clinicId}", "{messageType}")
    assert channels["clinicIn"]["address"] == subjects.clinic_in("{clinicId}", "{messageType}")
    assert channels["clinicHeartbeat"]["address"] == subjects.clinic_heartbeat("{clinicId}")
    assert channels["inboxRead"]["address"] == subjects.inbox_read("{clinicId}")
    assert channels["hubEvents"]["address"] == subjects.domain_event("{messageType}")
    assert channels["deadLetters"]["address"] == subjects.deadletter("{service}")
    assert channels["inboxReadReply"]["address"] is None, "the requester's reply subject"
    assert channels["clinicOut"]["parameters"]["messageType"]["enum"] == sorted(
        message_type(kind) for kind in COMMAND_TYPES
    )
    assert channels["clinicIn"]["parameters"]["messageType"]["enum"] == sorted(
        message_type(kind) for kind in HUB_MESSAGE_TYPES
    )


def test_the_inbox_read_is_a_request_answered_with_a_page() -> None:
    document = asyncapi_document()
    operation = document["operations"]["answerInboxRead"]

    assert operation["action"] == "receive"
    assert operation["channel"] == {"$ref": "#/channels/inboxRead"}
    assert [m["payload"] for m in _messages_of(document, operation).values()] == [
        {"$ref": "#/components/schemas/InboxRead"}
    ]
    assert operation["reply"]["channel"] == {"$ref": "#/channels/inboxReadReply"}
    assert [m["payload"] for m in _messages_of(document, operation["reply"]).values()] == [
        {"$ref": "#/components/schemas/InboxPage"}
    ]
    assert operation["bindings"]["nats"]["queue"] == inbox_reads.QUEUE_GROUP
    components = document["components"]["schemas"]
    assert {"InboxRead", "InboxPage", "InboxStored"} <= set(components)


def test_the_heartbeat_is_sent_with_its_contract() -> None:
    document = asyncapi_document()
    operation = document["operations"]["sendHeartbeat"]

    assert (operation["action"], operation["channel"]) == ("send", {"$ref": "#/channels/clinicHeartbeat"})
    assert [m["payload"] for m in _messages_of(document, operation).values()] == [
        {"$ref": "#/components/schemas/InboxHeartbeat"}
    ]


def test_every_channel_has_an_operation_and_every_message_a_real_schema() -> None:
    document = asyncapi_document()
    used = {operation["channel"]["$ref"] for operation in document["operations"].values()}
    used |= {op["reply"]["channel"]["$ref"] for op in document["operations"].values() if "reply" in op}

    assert used == {f"#/channels/{key}" for key in document["channels"]}
    for name, message in document["components"]["messages"].items():
        schema = _resolve(document, message["payload"]["$ref"])
        assert schema.get("properties"), f"{name} has no payload fields"


def test_the_consumers_the_services_pull_are_exactly_the_documented_receive_operations() -> None:
    """The services' wiring and the document come from one table: nothing pulled goes undescribed."""
    services = (referrals_app.create_app, notifications_app.create_app, audit_app.create_app)
    pulled = {spec for create in services for spec in create("nats://127.0.0.1:4222").consumers}
    described = {
        (op["x-jetstream"]["stream"], op["x-jetstream"]["durable"], op["x-jetstream"]["filterSubject"])
        for op in asyncapi_document()["operations"].values()
        if "x-jetstream" in op
    }

    assert {(spec.stream, spec.durable, spec.filter_subject) for spec in pulled} == described
    assert len(pulled) == len(topology.CONSUMERS)
