"""The notifications handlers' logic against in-memory adapters (``tests/fakes.py``).

Fast checks of what the handlers decide and write; tests/test_notifications.py runs the same
paths through a real nats-server, real channels and the service process.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from uuid import UUID

import msgspec
import pytest

from referral_hub.client import new_id
from referral_hub.contracts.alerts import Severity
from referral_hub.contracts.base import Modality
from referral_hub.contracts.codec import encode
from referral_hub.contracts.paging import DeliveryReceipt, DeliveryStatus, PageAck, PageSuppressed, PageTriggered
from referral_hub.contracts.registry import (
    ChannelKind,
    Clinic,
    ContactChannel,
    Member,
    Role,
    Rotation,
    WorkingHours,
)
from referral_hub.notifications import domain, handlers
from referral_hub.notifications.adapters import (
    DIGEST_PREFIX,
    PATIENT_PREFIX,
    SILENCE_PREFIX,
    Stores,
    Views,
    digest_key,
    page_key,
)
from referral_hub.notifications.digests import Digest
from referral_hub.notifications.dispatch import Dispatcher
from referral_hub.notifications.domain import NotifyIntent
from referral_hub.notifications.page_rules import (
    EscalationPolicy,
    Page,
    PageIntent,
    PageStatus,
    PatientRecord,
    Silence,
    page_id_for,
)
from referral_hub.notifications.sweeping import Sweeper
from referral_hub.runtime.jetstream.registry_cache import RegistryCache
from referral_hub.runtime.messaging.incoming import Incoming

from .fakes import FakeChannels, FakeKv, FakePublisher

NOON = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)  # 12:00 in New York, a Wednesday
EVENING = datetime(2026, 11, 25, 23, 30, tzinfo=UTC)  # 18:30 in New York: the desk is closed
NEXT_MORNING = datetime(2026, 11, 26, 13, 5, tzinfo=UTC)  # 08:05 in New York


def channel(address: str) -> tuple[ContactChannel, ...]:
    return (ContactChannel(kind=ChannelKind.EMAIL, address=address),)


CLINIC = Clinic(
    id="harbor-pt",
    name="Harbor PT",
    modalities=(Modality.PHYSICAL_THERAPY,),
    timezone="America/New_York",
    members=(
        Member(id="ana.ruiz", name="Ana", role=Role.CLINICAL_LEAD, channels=channel("ana@harbor.example")),
        Member(id="ben.okafor", name="Ben", role=Role.THERAPIST, channels=channel("ben@harbor.example")),
        Member(id="cy.diaz", name="Cy", role=Role.THERAPIST, channels=channel("cy@harbor.example")),
    ),
    oncall=Rotation(members=("ben.okafor", "cy.diaz"), starts_on=date(2026, 11, 24), handoff="08:00", shift_days=1),
    working_hours=WorkingHours(start="08:00", end="18:00", weekdays=(0, 1, 2, 3, 4)),
    intake_channels=channel("desk@harbor.example"),
)


class World:
    """A hub of fakes: the handlers' real code over in-memory state, channels and publishes."""

    def __init__(self, now: datetime = NOON) -> None:
        self.now = now
        self.views = Views()
        self.pages: FakeKv[Page] = FakeKv([("", self.views.open_pages)])
        self.patients: FakeKv[PatientRecord] = FakeKv([(PATIENT_PREFIX, self.views.absolute_alerts)])
        self.digests: FakeKv[Digest] = FakeKv([(DIGEST_PREFIX, self.views.pending_digests)])
        self.published = FakePublisher()
        self.channels = FakeChannels()
        registry = RegistryCache()
        registry.apply(f"clinic.{CLINIC.id}", msgspec.json.encode(CLINIC))
        stores = Stores(pages=self.pages, patients=self.patients, digests=self.digests, views=self.views)
        deliverer = Dispatcher(self.pages, registry, self.channels, self.published, lambda: self.now)
        timing = handlers.Timing(EscalationPolicy(), lambda: self.now)
        self.hub = handlers.Hub(stores, registry, deliverer, timing)

    def silence(self, silence: Silence) -> None:
        self.views.silences.apply(f"{SILENCE_PREFIX}{silence.silence_id}", msgspec.json.encode(silence))

    def page(self, intent: PageIntent) -> Page:
        stored = self.pages.records.get(page_key(page_id_for(intent.dedup_key)))
        assert stored is not None
        return stored[0]

    def ack_delivery(self, page: Page, member: str, message_id: UUID | None = None) -> Incoming:
        ack = PageAck(
            message_id=message_id or new_id(),
            occurred_at=self.now,
            sender_clinic=CLINIC.id,
            actor=member,
            correlation_id=page.intent.about_message_id,
            page_id=page.page_id,
            member=member,
        )
        return Incoming(
            subject=f"clinic.{CLINIC.id}.out.page.ack",
            data=encode(ack),
            headers={},
            stream="CLINIC_OUT",
            sequence=1,
            stored_at=self.now,
            attempt=1,
        )


def relative(**overrides: object) -> PageIntent:
    fields: dict[str, object] = {
        "source": "alert",
        "source_id": new_id(),
        "clinic": CLINIC.id,
        "patient_ref": "pt-0001",
        "severity": Severity.RELATIVE,
        "modalities": (Modality.PHYSICAL_THERAPY,),
        "about_message_id": new_id(),
        "summary": "anticoagulant: deep pressure contraindicated",
        "notify_clinics": (CLINIC.id,),
        "source_at": NOON,
    }
    fields.update(overrides)
    return PageIntent(**fields)  # type: ignore[arg-type]  # test data by keyword


async def test_a_relative_alert_pages_the_on_call_member_and_marks_the_step_delivered() -> None:
    world = World()
    intent = relative()

    assert await handlers.INTENT_HANDLERS[PageIntent](intent, world.hub, world.now) == []
    await world.hub.deliverer.drain()

    assert [(sent.address, outbound.payload["page_id"]) for sent, outbound in world.channels.sent] == [
        ("cy@harbor.example", str(page_id_for(intent.dedup_key)))
    ]
    triggered = world.published.events("page.triggered")
    assert [e.member for e in triggered if isinstance(e, PageTriggered)] == ["cy.diaz"]
    receipts = [e for e in world.published.events("delivery.receipt") if isinstance(e, DeliveryReceipt)]
    assert [(r.member, r.status) for r in receipts] == [("cy.diaz", DeliveryStatus.DELIVERED)]
    page = world.page(intent)
    assert page.status is PageStatus.OPEN
    assert page.delivered_step == page.step
    assert world.pages.saves == 2  # opened, then marked delivered at the revision it was opened with


async def test_the_same_intent_again_writes_and_sends_nothing() -> None:
    world = World()
    intent = relative()
    await handlers.open_page(intent, world.hub, world.now)
    await world.hub.deliverer.drain()
    saves, sent = world.pages.saves, len(world.channels.sent)

    assert await handlers.open_page(intent, world.hub, world.now) == []
    await world.hub.deliverer.drain()

    assert (world.pages.saves, len(world.channels.sent)) == (saves, sent)


async def test_a_silence_records_the_page_as_suppressed_and_sends_nothing() -> None:
    world = World()
    silence = Silence(
        silence_id=new_id(),
        clinic=CLINIC.id,
        ends_at=NOON + timedelta(hours=2),
        created_by="ana.ruiz",
        reason="maintenance",
    )
    world.silence(silence)
    intent = relative()

    outgoing = await handlers.open_page(intent, world.hub, world.now)
    await world.hub.deliverer.drain()

    [event] = [msgspec.json.decode(item.payload, type=PageSuppressed) for item in outgoing]
    assert event.silence_id == silence.silence_id
    assert world.page(intent).status is PageStatus.SUPPRESSED
    assert world.channels.sent == []


async def test_an_absolute_alert_in_force_inhibits_a_relative_page_for_that_modality() -> None:
    world = World()
    absolute = domain.AbsoluteChanged("pt-0001", new_id(), (Modality.PHYSICAL_THERAPY,), in_force=True)
    await handlers.INTENT_HANDLERS[domain.AbsoluteChanged](absolute, world.hub, world.now)
    intent = relative()

    outgoing = await handlers.open_page(intent, world.hub, world.now)

    [event] = [msgspec.json.decode(item.payload, type=PageSuppressed) for item in outgoing]
    assert "inhibited" in event.reason
    assert event.silence_id is None


async def test_an_ack_that_loses_a_race_is_decided_again_against_the_winner() -> None:
    world = World()
    intent = relative()
    await handlers.open_page(intent, world.hub, world.now)
    await world.hub.deliverer.drain()
    page = world.page(intent)
    escalated = msgspec.structs.replace(page, level=1, changed_at=NOON + timedelta(minutes=5))
    world.pages.lose_next_race(page_key(page.page_id), escalated)

    handled = await handlers.on_ack(world.hub, world.ack_delivery(page, "cy.diaz"))

    assert handled.outcome == "accepted"
    assert world.pages.conflicts == 1
    acked = world.page(intent)
    assert (acked.status, acked.acked_by, acked.level) == (PageStatus.ACKNOWLEDGED, "cy.diaz", 1)


async def test_an_ack_redelivered_is_replayed_without_a_second_write() -> None:
    world = World()
    intent = relative()
    await handlers.open_page(intent, world.hub, world.now)
    await world.hub.deliverer.drain()
    delivery = world.ack_delivery(world.page(intent), "cy.diaz", new_id())

    first = await handlers.on_ack(world.hub, delivery)
    saves = world.pages.saves
    again = await handlers.on_ack(world.hub, delivery)

    assert (first.outcome, again.outcome) == ("accepted", "replayed")
    assert world.pages.saves == saves
    assert again.outgoing == first.outgoing


async def test_an_ack_by_a_stranger_is_refused_and_changes_nothing() -> None:
    world = World()
    intent = relative()
    await handlers.open_page(intent, world.hub, world.now)
    await world.hub.deliverer.drain()
    saves = world.pages.saves

    handled = await handlers.on_ack(world.hub, world.ack_delivery(world.page(intent), "zed.nobody"))

    assert handled.outcome == "rejected"
    assert world.pages.saves == saves
    assert world.page(intent).status is PageStatus.OPEN


@pytest.mark.parametrize("redeliveries", [1, 2])
async def test_routine_notifications_after_hours_wait_for_one_digest_in_the_morning(redeliveries: int) -> None:
    world = World(EVENING)
    notify = NotifyIntent(CLINIC.id, "referral.requested", new_id(), new_id(), "new referral from lotus-acu")

    for _ in range(redeliveries):
        await handlers.notify(notify, world.hub, world.now)
    await world.hub.deliverer.drain()

    assert world.channels.sent == []
    held = world.digests.records[digest_key(CLINIC.id)][0]
    assert [item.summary for item in held.items] == ["new referral from lotus-acu"]

    world.now = NEXT_MORNING
    sweeper = Sweeper(world.hub)
    assert await sweeper.sweep_once() == 1
    assert await sweeper.sweep_once() == 0
    await world.hub.deliverer.drain()

    [(desk, digest)] = world.channels.sent
    assert desk.address == "desk@harbor.example"
    assert digest.payload["topic"] == "digest"
    assert "1 notifications:" in digest.text
    assert "new referral from lotus-acu" in digest.text
    assert world.digests.records[digest_key(CLINIC.id)][0].items == ()
