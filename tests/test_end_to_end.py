"""The walking skeleton against a real nats-server: A refers to B, B sees it, audit has it."""

from __future__ import annotations

from referral_hub.audit.domain import verify
from referral_hub.contracts.audit import AuditOutcome
from referral_hub.contracts.referrals import ReferralRequested, ReferralState
from referral_hub.contracts.rejections import Rejection

from .helpers import RunningHub, audit_entries, eventually, referral_request, wait_idle


async def test_referral_reaches_recipient_inbox(hub: RunningHub) -> None:
    sender, recipient = await hub.clinic("harbor-pt"), await hub.clinic("lotus-acu")
    request = referral_request()

    await sender.send(request)

    async def delivered() -> list[ReferralRequested]:
        return [item.message async for item in recipient.inbox() if isinstance(item.message, ReferralRequested)]

    [event] = await eventually(delivered)
    assert event.referral_id == request.referral_id
    assert event.patient_ref == request.patient_ref
    assert event.state == ReferralState.REQUESTED
    assert event.causation_id == request.message_id
    assert event.correlation_id == request.correlation_id
    assert event.referring_clinic == "harbor-pt"


async def test_sender_gets_confirmation_in_its_own_inbox(hub: RunningHub) -> None:
    sender = await hub.clinic("harbor-pt")
    request = referral_request()

    answer = await sender.send_and_confirm(request)

    assert isinstance(answer.message, ReferralRequested)
    assert answer.subject == "clinic.harbor-pt.in.referral.requested"


async def test_referral_lands_in_audit_log_with_a_verifying_chain(hub: RunningHub) -> None:
    sender = await hub.clinic("harbor-pt")
    request = referral_request()
    await sender.send_and_confirm(request)
    await wait_idle(hub.connection)

    entries = await audit_entries(hub.connection)

    submission = [e for e in entries if e.action == "submit" and e.source_message_id == str(request.message_id)]
    assert len(submission) == 1
    assert submission[0].clinic == "harbor-pt"
    assert submission[0].member == "ben.okafor"
    assert submission[0].referral_id == str(request.referral_id)
    assert submission[0].outcome == AuditOutcome.SUCCESS
    deliveries = {e.clinic for e in entries if e.action == "deliver" and e.referral_id == str(request.referral_id)}
    assert deliveries == {"harbor-pt", "lotus-acu"}
    assert verify(entries) == (len(entries), None)


async def test_duplicate_msg_id_has_no_second_effect(hub: RunningHub) -> None:
    sender, recipient = await hub.clinic("harbor-pt"), await hub.clinic("lotus-acu")
    request = referral_request()

    first = await sender.send(request)
    second = await sender.send(request)
    await wait_idle(hub.connection)

    assert first.duplicate is False
    assert second.duplicate is True
    assert second.sequence == first.sequence
    assert await recipient.inbox_count() == 1


async def test_resent_message_under_new_msg_id_is_replayed_not_reapplied(hub: RunningHub) -> None:
    sender, recipient = await hub.clinic("harbor-pt"), await hub.clinic("lotus-acu")
    request = referral_request()
    await sender.send_and_confirm(request)

    from referral_hub.contracts.codec import encode  # noqa: PLC0415

    await sender.publish_raw("referral.request", encode(request), msg_id="a-different-idempotency-key")
    await wait_idle(hub.connection)

    assert await recipient.inbox_count() == 1
    rejections = [item async for item in sender.inbox() if isinstance(item.message, Rejection)]
    assert rejections == []


async def test_offline_clinic_gets_its_inbox_when_it_comes_back(hub: RunningHub) -> None:
    sender = await hub.clinic("harbor-pt")
    requests = [referral_request(patient_ref=f"pt-10{n}") for n in range(3)]
    for request in requests:
        await sender.send(request)
    await wait_idle(hub.connection)

    late = await hub.clinic("lotus-acu")
    received = [item.message async for item in late.inbox()]

    # Order is kept per referral, not across referrals (handled concurrently): compare as sets.
    assert {m.referral_id for m in received if isinstance(m, ReferralRequested)} == {r.referral_id for r in requests}
    assert len(received) == len(requests)
