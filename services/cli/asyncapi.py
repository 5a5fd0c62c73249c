"""The AsyncAPI 3 document of the hub: every subject it uses, who moves what on it, and the payloads.

Declared from the hub's own tables rather than from a framework's view of its subscribers:
the channels are the subject families of ``runtime.jetstream.subjects`` (their addresses built by the
same functions the services call), the durable consumers of ``runtime.jetstream.topology`` become the
``receive`` operations (each names its stream, durable and filter under ``x-jetstream``), and
the payloads are the msgspec contracts' JSON Schema, the same components the compatibility
check guards. Most services read through their own pull loops and take raw bytes (so bad
input is refused with a typed code), which a framework's generator can only describe as
empty payloads.

The document is written from the hub's side: ``receive`` is what the hub reads, ``send``
what it writes. A clinic does the opposite on the clinic-facing channels.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any, Final

import msgspec

from referral_hub.contracts.audit import AuditCheckpoint, AuditEntry
from referral_hub.contracts.base import CONTRACT_VERSION, message_type
from referral_hub.contracts.codec import COMMAND_TYPES, HUB_MESSAGE_TYPES
from referral_hub.contracts.compat import COMPONENT_REF, current_components
from referral_hub.contracts.inbox import InboxHeartbeat, InboxPage, InboxRead
from referral_hub.contracts.paging import PageAck
from referral_hub.contracts.rejections import DeadLetter
from referral_hub.runtime.jetstream import streams, subjects, topology
from referral_hub.runtime.jetstream.topology import ConsumerSpec
from referral_hub.runtime.messaging import inbox_reads

Document = dict[str, Any]

ASYNCAPI_VERSION: Final = "3.1.0"
CLINIC: Final = "{clinicId}"
TYPE: Final = "{messageType}"
ADVISORY: Final = "MaxDeliveriesAdvisory"
COMMAND_HEADERS: Final = "ClinicCommandHeaders"

NATS_BINDING_VERSION: Final = "0.1.0"
MAX_DELIVERIES_ADVISORY_SCHEMA: Final[Document] = {
    "title": "io.nats.jetstream.advisory.v1.max_deliver",
    "description": (
        "What nats-server publishes when a message used up its consumer's MaxDeliver (the server's "
        "schema, not a hub contract; the hub reads stream, consumer, stream_seq and deliveries)."
    ),
    "type": "object",
    "properties": {
        "type": {"type": "string", "const": "io.nats.jetstream.advisory.v1.max_deliver"},
        "id": {"type": "string"},
        "timestamp": {"type": "string", "format": "date-time"},
        "stream": {"type": "string"},
        "consumer": {"type": "string"},
        "stream_seq": {"type": "integer", "minimum": 1},
        "deliveries": {"type": "integer", "minimum": 1},
        "domain": {"type": "string"},
    },
    "required": ["type", "id", "timestamp", "stream", "consumer", "stream_seq", "deliveries"],
}
COMMAND_HEADERS_SCHEMA: Final[Document] = {
    "type": "object",
    "properties": {
        "Nats-Msg-Id": {
            "type": "string",
            "format": "uuid",
            "description": (
                "The command's message_id: JetStream de-duplicates on it, so a clinic may resend "
                "after a lost acknowledgement without the command taking effect twice."
            ),
        }
    },
}

CLINIC_ID_PARAMETER: Final[Document] = {
    "description": (
        "The clinic's registry id. On clinic subjects the broker authenticates it: a clinic can use only its own."
    ),
    "examples": ["harbor-pt"],
}


class Channel(msgspec.Struct, frozen=True, kw_only=True):
    """One subject family: its address (``{parameters}`` in braces) and what flows on it."""

    key: str
    address: str | None
    wildcard: str
    """The NATS subject that matches every address of the channel (a stream's or a consumer's filter)."""
    description: str
    messages: tuple[type[msgspec.Struct], ...]
    """The hub's contracts that flow on it."""
    foreign_messages: tuple[str, ...] = ()
    """Messages in ``components.messages`` that are not the hub's contracts (the server's advisories)."""
    stream: str | None = None
    parameters: Document = {}


def _tag(kind: type[msgspec.Struct]) -> str:
    """A message's ``type`` tag; a contract without one (a request, a reply) goes by its name."""
    tag = kind.__struct_config__.tag
    return tag if isinstance(tag, str) else kind.__name__


def _commands_but(*skipped: type[msgspec.Struct]) -> tuple[type[msgspec.Struct], ...]:
    return tuple(kind for kind in COMMAND_TYPES if kind not in skipped)


def _types_parameter(kinds: Iterable[type[msgspec.Struct]], what: str) -> Document:
    tags = sorted(_tag(kind) for kind in kinds)
    return {"description": f"The {what}'s type tag; it must equal the message's own ``type``.", "enum": tags}


CHANNELS: Final = (
    Channel(
        key="clinicOut",
        address=subjects.clinic_out(CLINIC, TYPE),
        wildcard=subjects.CLINIC_OUT_ALL,
        stream=streams.CLINIC_OUT,
        description=(
            "What a clinic submits: one ClinicCommand per message, on the subject of its own type. "
            "Stored in CLINIC_OUT until the hub has handled it."
        ),
        messages=COMMAND_TYPES,
        parameters={"clinicId": CLINIC_ID_PARAMETER, "messageType": _types_parameter(COMMAND_TYPES, "command")},
    ),
    Channel(
        key="clinicIn",
        address=subjects.clinic_in(CLINIC, TYPE),
        wildcard=subjects.CLINIC_IN_ALL,
        stream=streams.CLINIC_IN,
        description=(
            "A clinic's inbox: every HubMessage for it, numbered by event_number. Stored in CLINIC_IN; the "
            "clinic reads it through the durable the hub makes for it "
            f"({topology.clinic_inbox_consumer(CLINIC).durable}, filter {subjects.clinic_inbox(CLINIC)}) "
            f"or by asking {subjects.inbox_read(CLINIC)}."
        ),
        messages=HUB_MESSAGE_TYPES,
        parameters={"clinicId": CLINIC_ID_PARAMETER, "messageType": _types_parameter(HUB_MESSAGE_TYPES, "message")},
    ),
    Channel(
        key="clinicHeartbeat",
        address=subjects.clinic_heartbeat(CLINIC),
        wildcard=subjects.clinic_heartbeat("*"),
        description=(
            "Every few seconds, the newest event number of the clinic's inbox (core NATS, not stored): "
            "a clinic holding a smaller one has missed messages and reads them back."
        ),
        messages=(InboxHeartbeat,),
        parameters={"clinicId": CLINIC_ID_PARAMETER},
    ),
    Channel(
        key="inboxRead",
        address=subjects.inbox_read(CLINIC),
        wildcard=subjects.INBOX_READ_ALL,
        description=(
            "A clinic asks for its stored inbox messages after an event number (request-reply on core "
            "NATS); the answer is an InboxPage on the request's reply subject. No consumer is involved, so "
            "any number of readers see the same inbox."
        ),
        messages=(InboxRead,),
        parameters={"clinicId": CLINIC_ID_PARAMETER},
    ),
    Channel(
        key="inboxReadReply",
        address=None,
        wildcard="_INBOX.>",
        description="The reply to an inbox read: the reply subject the requester's NATS client put on the request.",
        messages=(InboxPage,),
    ),
    Channel(
        key="hubEvents",
        address=subjects.domain_event(TYPE),
        wildcard=subjects.EVENTS_ALL,
        stream=streams.HUB_EVENTS,
        description="Domain events, after the hub accepted a command (internal). Stored in HUB_EVENTS.",
        messages=HUB_MESSAGE_TYPES,
        parameters={"messageType": _types_parameter(HUB_MESSAGE_TYPES, "event")},
    ),
    Channel(
        key="deadLetters",
        address=subjects.deadletter("{service}"),
        wildcard=subjects.DEADLETTER_ALL,
        stream=streams.HUB_DEADLETTER,
        description=(
            "Refused or unprocessable messages, kept whole (the original bytes in base64) for operators "
            "(internal). Stored in HUB_DEADLETTER."
        ),
        messages=(DeadLetter,),
        parameters={"service": {"description": "The service that refused the message.", "examples": ["referrals"]}},
    ),
    Channel(
        key="maxDeliveriesAdvisories",
        address=subjects.MAX_DELIVERIES_ADVISORIES.removesuffix(">") + "{stream}.{consumer}",
        wildcard=subjects.MAX_DELIVERIES_ADVISORIES,
        stream=streams.HUB_ADVISORIES,
        description=(
            "nats-server's announcement that a message used up its consumer's MaxDeliver. Captured in "
            "HUB_ADVISORIES so that a service that was down still sees it; each becomes a dead letter."
        ),
        messages=(),
        foreign_messages=(ADVISORY,),
        parameters={
            "stream": {"description": "The stream holding the message.", "examples": [streams.CLINIC_OUT]},
            "consumer": {"description": "The durable that gave up.", "examples": [topology.REFERRALS_INTAKE.durable]},
        },
    ),
    Channel(
        key="auditEntries",
        address=subjects.AUDIT_ENTRY,
        wildcard=subjects.AUDIT_ENTRY,
        stream=streams.AUDIT,
        description=(
            "The hash-chained audit log, one subject for one chain (audit account). Stored in AUDIT: "
            "append-only, deny delete, deny purge."
        ),
        messages=(AuditEntry,),
    ),
    Channel(
        key="auditCheckpoints",
        address=subjects.AUDIT_CHECKPOINT,
        wildcard=subjects.AUDIT_CHECKPOINT,
        stream=streams.AUDIT_CHECKPOINTS,
        description=(
            "Signed tree heads of the audit log (audit account). Stored in AUDIT_CHECKPOINTS, append-only; "
            "each is also delivered to every clinic's inbox as audit.checkpoint.witnessed."
        ),
        messages=(AuditCheckpoint,),
    ),
)
"""Every subject family the hub uses; the first five are the clinic-facing ones."""

_BY_KEY: Final = {channel.key: channel for channel in CHANNELS}
_BY_WILDCARD: Final = {channel.wildcard: channel for channel in CHANNELS}


class Operation(msgspec.Struct, frozen=True, kw_only=True):
    """One thing the hub does on a channel."""

    key: str
    action: str
    channel: str
    description: str
    messages: tuple[type[msgspec.Struct], ...] | None = None
    """A subset of the channel's messages; ``None``: all of them."""
    consumer: ConsumerSpec | None = None
    reply: str | None = None
    queue: str | None = None


_CONSUMER_DESCRIPTIONS: Final = {
    topology.REFERRALS_INTAKE.durable: (
        "The referrals service handles every clinic submission but page.ack (acknowledged and left to "
        "notifications), in order per referral; a refusal is a rejection in the sender's inbox and a dead letter."
    ),
    topology.EXHAUSTED.durable: "The referrals service turns each advisory into a dead letter of the original message.",
    topology.NOTIFICATIONS_EVENTS.durable: (
        "The notifications service reads the events that page or notify, in order per patient."
    ),
    topology.NOTIFICATIONS_ACKS.durable: "The notifications service records a clinic's acknowledgement of a page.",
}
_HANDLED_BY_CONSUMER: Final[dict[str, tuple[type[msgspec.Struct], ...]]] = {
    topology.REFERRALS_INTAKE.durable: _commands_but(PageAck),
    topology.NOTIFICATIONS_ACKS.durable: (PageAck,),
}


def _kinds_of(spec: ConsumerSpec, channel: Channel) -> tuple[type[msgspec.Struct], ...] | None:
    """The messages ``spec`` handles: those its narrower filters let through, or a declared subset."""
    if spec.durable in _HANDLED_BY_CONSUMER:
        return _HANDLED_BY_CONSUMER[spec.durable]
    if spec.only:
        tags = {subject.removeprefix(spec.filter_subject.removesuffix(">")) for subject in spec.only}
        return tuple(kind for kind in channel.messages if _tag(kind) in tags)
    return None


def _channel_of(spec: ConsumerSpec) -> Channel:
    """The channel whose subjects a consumer's filter covers."""
    for channel in CHANNELS:
        if channel.stream == spec.stream and (
            spec.filter_subject == channel.wildcard or _matches(channel.wildcard, spec.filter_subject)
        ):
            return channel
    msg = f"no channel covers {spec.durable}'s filter {spec.filter_subject}"
    raise LookupError(msg)


def _matches(pattern: str, subject: str) -> bool:
    """Whether NATS subject ``pattern`` (with ``*`` and ``>``) matches ``subject`` (which may hold ``*`` too)."""
    wanted, given = pattern.split("."), subject.split(".")
    for index, part in enumerate(wanted):
        if part == ">":
            return len(given) > index
        if index >= len(given) or part not in {"*", given[index]}:
            return False
    return len(given) == len(wanted)


def _consumer_operations() -> list[Operation]:
    operations = []
    for spec in topology.CONSUMERS:
        channel = _channel_of(spec)
        description = _CONSUMER_DESCRIPTIONS.get(
            spec.durable, f"The audit service records every message stored in {spec.stream} in the audit chain."
        )
        operations.append(
            Operation(
                key=spec.durable,
                action="receive",
                channel=channel.key,
                description=description,
                messages=_kinds_of(spec, channel),
                consumer=spec,
            )
        )
    return operations


OPERATIONS: Final = (
    *_consumer_operations(),
    Operation(
        key="deliverToInbox",
        action="send",
        channel="clinicIn",
        description=(
            "The hub delivers to a clinic's inbox, numbering each message (event_number) in an atomic batch "
            "per clinic; Nats-Msg-Id de-duplicates a redelivered step's output."
        ),
    ),
    Operation(
        key="publishDomainEvent",
        action="send",
        channel="hubEvents",
        description="The referrals and notifications services record what they decided.",
    ),
    Operation(
        key="sendHeartbeat",
        action="send",
        channel="clinicHeartbeat",
        description="The referrals service announces each registered clinic's newest inbox event number.",
    ),
    Operation(
        key="answerInboxRead",
        action="receive",
        channel="inboxRead",
        description=(
            "The referrals service answers a clinic's read from the store (direct gets on CLINIC_IN), oldest "
            f"first, at most {inbox_reads.MAX_PAGE_MESSAGES} messages or {inbox_reads.MAX_PAGE_BYTES} bytes a page. "
            "A request it cannot read gets a page whose error says why."
        ),
        reply="inboxReadReply",
        queue=inbox_reads.QUEUE_GROUP,
    ),
    Operation(
        key="deadLetter",
        action="send",
        channel="deadLetters",
        description="A service parks a message it refused or could not process, with the reason and the original.",
    ),
    Operation(
        key="appendAuditEntry",
        action="send",
        channel="auditEntries",
        description="The audit service appends each entry, hash-chained to the one before.",
    ),
    Operation(
        key="publishCheckpoint",
        action="send",
        channel="auditCheckpoints",
        description="The audit service signs the log's tree head every N entries or T seconds.",
    ),
)
"""Everything the hub reads or writes: each durable consumer, then each kind of publish."""


def _message_key(kind: type[msgspec.Struct]) -> str:
    return kind.__name__


def _summary(kind: type[msgspec.Struct]) -> str:
    return (inspect.getdoc(kind) or kind.__name__).split("\n", 1)[0]


def _messages(channels: Iterable[Channel]) -> Document:
    messages: Document = {}
    for kind in (kind for channel in channels for kind in channel.messages):
        message: Document = {
            "name": _tag(kind),
            "title": kind.__name__,
            "summary": _summary(kind),
            "contentType": "application/json",
            "payload": {"$ref": COMPONENT_REF + kind.__name__},
        }
        if kind in COMMAND_TYPES:
            message["headers"] = {"$ref": COMPONENT_REF + COMMAND_HEADERS}
        messages[_message_key(kind)] = message
    messages[ADVISORY] = {
        "name": MAX_DELIVERIES_ADVISORY_SCHEMA["title"],
        "title": ADVISORY,
        "summary": "A message used up its consumer's MaxDeliver.",
        "contentType": "application/json",
        "payload": {"$ref": COMPONENT_REF + ADVISORY},
    }
    return messages


def _channel_messages(channel: Channel) -> list[str]:
    """The keys of the channel's messages, the same under the channel as in ``components.messages``."""
    return [*(_message_key(kind) for kind in channel.messages), *channel.foreign_messages]


def _channel(channel: Channel) -> Document:
    document: Document = {
        "address": channel.address,
        "description": channel.description,
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in _channel_messages(channel)},
        "x-nats-subject": channel.wildcard,
    }
    if channel.parameters:
        document["parameters"] = dict(channel.parameters)
    if channel.stream is not None:
        document["x-jetstream-stream"] = channel.stream
    return document


def _message_refs(channel: Channel, kinds: tuple[type[msgspec.Struct], ...] | None) -> list[Document]:
    names = _channel_messages(channel) if kinds is None else [_message_key(kind) for kind in kinds]
    return [{"$ref": f"#/channels/{channel.key}/messages/{name}"} for name in names]


def _operation(operation: Operation) -> Document:
    channel = _BY_KEY[operation.channel]
    document: Document = {
        "action": operation.action,
        "channel": {"$ref": f"#/channels/{channel.key}"},
        "description": operation.description,
        "messages": _message_refs(channel, operation.messages),
    }
    if operation.reply is not None:
        reply = _BY_KEY[operation.reply]
        document["reply"] = {"channel": {"$ref": f"#/channels/{reply.key}"}, "messages": _message_refs(reply, None)}
    if operation.queue is not None:
        document["bindings"] = {"nats": {"queue": operation.queue, "bindingVersion": NATS_BINDING_VERSION}}
    spec = operation.consumer
    if spec is not None:
        config = spec.config()
        document["x-jetstream"] = {
            "stream": spec.stream,
            "durable": spec.durable,
            "filterSubject": spec.filter_subject,
            "filterSubjects": list(spec.only),
            "ackPolicy": "explicit",
            "maxDeliver": spec.max_deliver,
            "ackWaitSeconds": config.ack_wait,
        }
    return document


def asyncapi_document() -> Document:
    """AsyncAPI 3 for the whole hub, with the contracts as component schemas."""
    schemas = current_components()
    schemas[ADVISORY] = MAX_DELIVERIES_ADVISORY_SCHEMA
    schemas[COMMAND_HEADERS] = COMMAND_HEADERS_SCHEMA
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Referral Hub",
            "version": f"{CONTRACT_VERSION}.0.0",
            "description": (
                "Clinics publish ClinicCommand messages on clinic.<clinic_id>.out.<type> and read HubMessage "
                "deliveries from clinic.<clinic_id>.in.<type>, through the durable inbox-<clinic_id> or by "
                "asking hub.inbox.<clinic_id>.read. Set Nats-Msg-Id to the message_id: it is the idempotency "
                "key. Operations are the hub's: receive is what it reads, send what it writes."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "The NATS server `hubctl up` starts; each clinic connects with its own credentials.",
            }
        },
        "channels": {channel.key: _channel(channel) for channel in CHANNELS},
        "operations": {operation.key: _operation(operation) for operation in OPERATIONS},
        "components": {"schemas": schemas, "messages": _messages(CHANNELS)},
        "x-message-types": sorted(message_type(kind) for kind in (*COMMAND_TYPES, *HUB_MESSAGE_TYPES)),
    }


def channel_for_subject(subject: str) -> str | None:
    """The key of the channel whose subjects include ``subject`` (a concrete subject or a filter)."""
    if subject in _BY_WILDCARD:
        return _BY_WILDCARD[subject].key
    for channel in CHANNELS:
        if _matches(channel.wildcard, subject):
            return channel.key
    return None
