"""A clinic resends another clinic's page acknowledgement under its own name; it is not taken for a redelivery.

An ack's message id reaches every clinic told of it (``page.acknowledged`` names it as its
cause). The notifications service took any ack carrying the recorded message id for that ack
redelivered, and announced it again, now as acknowledged by the sender's clinic and member:
a forged acknowledgement told to the care team, and an answer that said the page exists.
Now only the clinic and member that acknowledged replay it; anyone else gets the answer a
page that does not exist gets. Runs the real handlers over the in-memory stores.
"""

from __future__ import annotations

import msgspec

from referral_hub.client import new_id
from referral_hub.contracts.base import Modality
from referral_hub.contracts.codec import encode
from referral_hub.contracts.paging import PageAck
from referral_hub.contracts.registry import Clinic, Member, Role
from referral_hub.contracts.rejections import Rejection, RejectionCode
from referral_hub.notifications import handlers
from referral_hub.notifications.page_rules import Page
from referral_hub.runtime.messaging.incoming import Incoming
from referral_hub.runtime.messaging.outgoing import ToInbox
from tests.test_notification_handlers import World, relative

STRANGER = Clinic(
    id="summit-chiro",
    name="Summit Chiropractic",
    modalities=(Modality.CHIROPRACTIC,),
    members=(Member(id="tom.nguyen", name="Tom", role=Role.THERAPIST),),
)


def ack_from(world: World, page: Page, clinic: str, member: str, message_id: object) -> Incoming:
    ack = PageAck(
        message_id=message_id,
        occurred_at=world.now,
        sender_clinic=clinic,
        actor=member,
        correlation_id=page.intent.about_message_id,
        page_id=page.page_id,
        member=member,
    )
    return Incoming(
        subject=f"clinic.{clinic}.out.page.ack",
        data=encode(ack),
        headers={},
        stream="CLINIC_OUT",
        sequence=2,
        stored_at=world.now,
        attempt=1,
    )


def rejection_of(handled: handlers.Handled) -> Rejection:
    [rejection] = [
        item.message for item in handled.outgoing if isinstance(item, ToInbox) and isinstance(item.message, Rejection)
    ]
    return rejection


async def test_another_clinic_reusing_an_acks_message_id_gets_the_answer_for_no_page() -> None:
    world = World()
    world.hub.registry.apply(f"clinic.{STRANGER.id}", msgspec.json.encode(STRANGER))
    intent = relative()
    await handlers.open_page(intent, world.hub, world.now)
    await world.hub.deliverer.drain()
    page = world.page(intent)
    acked = new_id()
    first = await handlers.on_ack(world.hub, ack_from(world, page, "harbor-pt", "cy.diaz", acked))
    saves = world.pages.saves

    reused = await handlers.on_ack(world.hub, ack_from(world, page, STRANGER.id, "tom.nguyen", acked))
    unknown = msgspec.structs.replace(page, page_id=new_id())
    nothing = await handlers.on_ack(world.hub, ack_from(world, unknown, STRANGER.id, "tom.nguyen", new_id()))

    assert first.outcome == "accepted"
    assert (reused.outcome, nothing.outcome) == ("rejected", "rejected")
    assert rejection_of(reused).code is rejection_of(nothing).code is RejectionCode.UNKNOWN_PAGE
    assert rejection_of(reused).reason == rejection_of(nothing).reason.replace(str(unknown.page_id), str(page.page_id))
    assert world.pages.saves == saves
    assert world.page(intent).acked_clinic == "harbor-pt"
