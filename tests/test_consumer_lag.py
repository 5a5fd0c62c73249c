"""Consumer lag from the broker's side: ``/jsz?consumers=true`` read by the NATS exporter."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from nats.aio.client import Client
from prometheus_client.core import Metric

from referral_hub.runtime.broker.consumer_lag import ack_floor_age, consumer_states
from referral_hub.runtime.broker.embedded import EmbeddedNats
from referral_hub.runtime.broker.exporter import NatsMonitor, server_label
from referral_hub.runtime.jetstream import subjects, topology

NOW = "2026-12-08T00:05:57.821432433Z"


def jsz(consumer: dict[str, object]) -> dict[str, object]:
    return {
        "now": NOW,
        "account_details": [
            {"name": "HUB", "stream_detail": [{"name": "CLINIC_OUT", "consumer_detail": [consumer]}]},
        ],
    }


def test_a_consumer_with_waiting_messages_ages_from_its_ack_floors_last_move() -> None:
    consumer = {
        "name": "referrals-intake",
        "num_pending": 3,
        "num_ack_pending": 1,
        "ack_floor": {"stream_seq": 14, "last_active": "2026-12-08T00:04:57.821432111Z"},
    }

    assert ack_floor_age(consumer, datetime(2026, 12, 8, 0, 5, 57, 821432, tzinfo=UTC)) == 60.0


def test_a_consumer_with_nothing_waiting_has_age_zero_however_long_ago_it_acked() -> None:
    consumer = {
        "name": "referrals-intake",
        "num_pending": 0,
        "num_ack_pending": 0,
        "ack_floor": {"last_active": "2020-01-01T00:00:00Z"},
    }

    assert consumer_states(jsz(consumer), ["referrals-intake"])[0].ack_floor_age_seconds == 0.0


def test_only_the_hubs_own_durables_are_reported() -> None:
    inbox = {"name": "inbox-harbor-pt", "num_pending": 13}

    assert consumer_states(jsz(inbox), [spec.durable for spec in topology.CONSUMERS]) == []


def by_consumer(families: list[Metric], name: str) -> dict[str, float]:
    return {
        sample.labels["consumer"]: sample.value
        for family in families
        if family.name == name
        for sample in family.samples
    }


async def test_the_exporter_shows_a_consumer_nobody_reads_piling_up_with_no_waiting_pull(
    nats_server: EmbeddedNats, provisioned: Client
) -> None:
    js = provisioned.jetstream()
    for number in range(3):
        await js.publish(
            subjects.clinic_out("harbor-pt", "referral.request"), b"{}", headers={"Nats-Msg-Id": f"m{number}"}
        )

    families = await asyncio.to_thread(lambda: list(NatsMonitor([nats_server.monitor_url]).collect()))

    assert by_consumer(families, "hub_consumer_pending_messages")["referrals-intake"] == 3
    assert by_consumer(families, "hub_consumer_waiting_pulls")["referrals-intake"] == 0
    assert by_consumer(families, "hub_consumer_ack_floor_age_seconds")["referrals-intake"] > 0
    assert {sample.labels["server"] for family in families for sample in family.samples} == {
        server_label(nats_server.monitor_url)
    }
