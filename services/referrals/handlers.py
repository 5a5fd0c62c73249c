"""What the referrals service does with one clinic submission: decode, decide, emit."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import msgspec
import structlog

from referral_hub.contracts.base import Message
from referral_hub.contracts.codec import encode
from referral_hub.contracts.referrals import ReferralRequest
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.referrals import domain
from referral_hub.referrals.adapters import ReferralStore
from referral_hub.runtime import subjects
from referral_hub.runtime.handling import Delivery, Handled, Outgoing
from referral_hub.runtime.metrics import REFERRAL_TRANSITIONS, REJECTIONS
from referral_hub.runtime.registry import RegistryCache
from referral_hub.runtime.rejecting import Offender, Refusal, offending_message_id, refusal_outputs

SERVICE = "referrals"


class _Identity(msgspec.Struct):
    """The envelope fields we try to read even from a message that failed validation."""

    message_id: str = ""
    correlation_id: str = ""


class IntakeHandler:
    """Handles everything clinics publish on ``clinic.*.out.>``."""

    def __init__(self, store: ReferralStore, registry: RegistryCache) -> None:
        """Depend on the referral store and the registry view, nothing else."""
        self._store = store
        self._registry = registry

    async def __call__(self, delivery: Delivery) -> Handled:
        """Admit, decide and return the outputs; raises only for infrastructure failures."""
        admitted = domain.admit(delivery.subject, delivery.data, self._registry.get)
        if isinstance(admitted, Refusal):
            return self._refuse(delivery, admitted, None)
        command = admitted.command
        structlog.contextvars.bind_contextvars(
            message_id=str(command.message_id),
            correlation_id=str(command.correlation_id),
            causation_id=str(command.causation_id or ""),
            clinic=command.sender_clinic,
        )
        if isinstance(command, ReferralRequest):
            return await self._request(delivery, command)
        refusal = Refusal(
            RejectionCode.UNSUPPORTED_MESSAGE_TYPE,
            f"{type(command).__name__} is a valid contract this hub version does not process yet",
        )
        return self._refuse(delivery, refusal, command.message_id)

    async def _request(self, delivery: Delivery, command: ReferralRequest) -> Handled:
        stored = await self._store.load(command.referral_id)
        existing, revision = stored if stored is not None else (None, None)
        decision = domain.request(command, existing, self._registry.get, delivery.stored_at)
        if isinstance(decision, Refusal):
            return self._refuse(delivery, decision, command.message_id)
        if isinstance(decision, domain.Created):
            await self._store.save(decision.referral, revision)
            REFERRAL_TRANSITIONS.labels("request").inc()
        event = domain.requested_event(decision.referral)
        return Handled(
            outcome="accepted" if isinstance(decision, domain.Created) else "replayed",
            outgoing=announce(event, "referral.requested", (event.recipient_clinic, event.referring_clinic)),
            log_fields={"transition": "request", "recipient": event.recipient_clinic},
        )

    def _refuse(self, delivery: Delivery, refusal: Refusal, message_id: uuid.UUID | None) -> Handled:
        REJECTIONS.labels(SERVICE, refusal.code).inc()
        out = subjects.parse_clinic_out(delivery.subject)
        sender = out.clinic_id if out is not None and self._registry.get(out.clinic_id) is not None else None
        identity = _lenient_identity(delivery.data)
        offender = Offender(
            sender_clinic=sender,
            message_id=offending_message_id(delivery, str(message_id) if message_id else identity.message_id),
            correlation_id=_uuid_or_none(identity.correlation_id),
        )
        return Handled(
            outcome="rejected",
            outgoing=refusal_outputs(SERVICE, delivery, refusal, offender),
            log_fields={"rejection_code": str(refusal.code), "reason": refusal.reason[:300]},
        )


def announce(event: Message, event_type: str, clinics: Iterable[str]) -> tuple[Outgoing, ...]:
    """The domain event plus one inbox copy per clinic.

    Each stored copy needs its own ``Nats-Msg-Id``: copies in the same stream sharing one
    would be de-duplicated into a single message, silently starving all but one inbox.
    """
    payload = encode(event)
    event_id = str(event.message_id)
    return (
        Outgoing(subjects.domain_event(event_type), payload, f"{event_id}/event"),
        *(
            Outgoing(subjects.clinic_in(clinic, event_type), payload, f"{event_id}/inbox/{clinic}")
            for clinic in clinics
        ),
    )


def _lenient_identity(data: bytes) -> _Identity:
    try:
        return msgspec.json.decode(data, type=_Identity)
    except msgspec.DecodeError:
        return _Identity()


def _uuid_or_none(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None
