"""The hub's own receivers, ``hubctl up``'s demo pager and ``hubctl bench pages``' receiver, verify hub webhooks."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator

from referral_hub.cli.bench_pages import Arrivals, paged_registry, receiver
from referral_hub.contracts.base import Modality
from referral_hub.contracts.registry import ChannelKind, Clinic, ContactChannel, Member, Registry, Role
from referral_hub.demo.pager import DemoPager
from referral_hub.notifications.channels import Attempt, Channels, ChannelSettings, Outbound
from referral_hub.notifications.webhooks import new_secret

PT, ACU = "harbor-pt", "lotus-acu"


def registry() -> Registry:
    def clinic(clinic_id: str, member: str, modality: Modality) -> Clinic:
        return Clinic(
            id=clinic_id,
            name=clinic_id,
            modalities=(modality,),
            members=(Member(id=member, name=member, role=Role.THERAPIST),),
        )

    return Registry(
        clinics=(clinic(PT, "ben.okafor", Modality.PHYSICAL_THERAPY), clinic(ACU, "raj.patel", Modality.ACUPUNCTURE))
    )


def page(clinic: str, **extra: object) -> Outbound:
    # No page_id: the demo pager acknowledges only pages that name one, and there is no hub here to take the ack.
    return Outbound(
        subject="page",
        text="page",
        payload={"type": "page", "clinic": clinic, "severity": "critical", "summary": "apixaban", **extra},
    )


def one_attempt(env: dict[str, str]) -> Channels:
    return Channels(dataclasses.replace(ChannelSettings.from_env(env), attempts=1))


async def deliver(channels: Channels, channel: ContactChannel, outbound: Outbound) -> bool:
    async def report(_attempt: Attempt) -> None:
        return

    return await channels.deliver((channel,), outbound, report)


@contextlib.contextmanager
def demo_pager() -> Iterator[tuple[DemoPager, list[str], Channels, ContactChannel]]:
    said: list[str] = []
    pager = DemoPager("nats://127.0.0.1:1", said.append)
    paged = pager.with_channels(registry())
    # What hubctl up hands the services as HUB_WEBHOOK_SECRET.
    channels = one_attempt({"HUB_WEBHOOK_SECRET": pager.secret})
    [pt_hook] = paged.clinics[0].members[0].channels
    pager.start()
    try:
        yield pager, said, channels, pt_hook
    finally:
        pager.stop()


async def test_the_demo_pager_verifies_each_page_with_its_clinics_secret() -> None:
    with demo_pager() as (pager, said, channels, pt_hook):
        ours = await deliver(channels, pt_hook, page(PT))
        # A page signed with lotus-acu's secret, sent to harbor-pt's member.
        forged = await deliver(channels, pt_hook, page(ACU))

    assert (ours, forged) == (True, False)
    assert set(json.loads(pager.secret)) == {PT, ACU}
    assert [line.rpartition("[")[2] for line in said] == ["signature ok]", "BAD SIGNATURE, refused]"]
    assert all(f"({PT})" in line for line in said)


async def test_the_demo_pager_shows_a_repeated_webhook_id_as_a_repeat() -> None:
    with demo_pager() as (_, said, channels, pt_hook):
        for _ in range(2):
            assert await deliver(channels, pt_hook, dataclasses.replace(page(PT), notification_id="msg_1"))
        assert await deliver(channels, pt_hook, page(PT))

    assert [line.rpartition("[")[2] for line in said] == ["signature ok]", "repeat, already shown]", "signature ok]"]


async def test_the_bench_receiver_counts_only_pages_signed_for_their_clinic() -> None:
    arrivals = Arrivals()
    http = receiver(arrivals)
    try:
        base = f"http://127.0.0.1:{http.server_address[1]}/page"
        paged = paged_registry(base)
        arrivals.secrets.update({clinic.id: new_secret() for clinic in paged.clinics})
        channels = one_attempt({"HUB_WEBHOOK_SECRET": arrivals.table()})
        to_pt = ContactChannel(kind=ChannelKind.WEBHOOK, address=f"{base}/{PT}")
        signed = await deliver(channels, to_pt, page(PT, dedup_key="alert:a-1:harbor-pt"))
        forged = await deliver(channels, to_pt, page(ACU, dedup_key="alert:a-2:harbor-pt"))
    finally:
        http.shutdown()

    assert signed
    assert not forged
    assert set(arrivals.at) == {"a-1"}
    assert arrivals.bad_signatures == 1
