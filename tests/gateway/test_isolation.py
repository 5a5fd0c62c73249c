"""The gateway's NATS rights, attacked on the real server with the generated accounts.

The ``gateway`` hub user may touch its own buckets and read (never write) the client
registrations; it reads no stream, writes no audit entry and publishes on no clinic subject.
A clinic connection the gateway opens for clinic A's token is clinic A's: the server refuses
it anything as clinic B.
"""

from __future__ import annotations

import msgspec
import pytest

from referral_hub.client import ClinicClient
from referral_hub.runtime.broker import credentials, permissions
from referral_hub.runtime.broker.embedded import EmbeddedNats
from referral_hub.runtime.jetstream import streams, subjects, topology
from tests.helpers import referral_request
from tests.security.hostile import Hostile

JS = permissions.JS_API


@pytest.mark.usefixtures("provisioned")
async def test_the_gateway_user_reaches_its_own_buckets_and_nothing_else(nats_server: EmbeddedNats) -> None:
    hostile = await Hostile.connect(nats_server.url, "gateway", credentials.for_hub_user(permissions.GATEWAY))
    try:
        # Its own state works: a used-jti record, written create-only.
        mine = await hostile.attempt(f"{JS}.STREAM.INFO.KV_{topology.GATEWAY_REPLAY_KV}")
        assert not mine.refused, mine.describe()
        for subject in (
            f"{JS}.STREAM.INFO.{streams.CLINIC_IN}",
            f"{JS}.STREAM.MSG.GET.{streams.CLINIC_IN}",
            f"{JS}.DIRECT.GET.{streams.CLINIC_IN}",
            f"{JS}.STREAM.INFO.{streams.CLINIC_OUT}",
            f"{JS}.STREAM.MSG.GET.{streams.HUB_EVENTS}",
            f"{JS}.STREAM.INFO.KV_{topology.REFERRALS_KV}",
            f"{JS}.CONSUMER.CREATE.{streams.CLINIC_IN}",
            f"{permissions.HUB_API_PREFIX}.STREAM.INFO.{streams.AUDIT}",
            f"{JS}.STREAM.INFO.{streams.AUDIT}",
            subjects.inbox_read("harbor-pt"),
        ):
            outcome = await hostile.attempt(subject, {"seq": 1})
            assert outcome.refused, f"{subject}: {outcome.describe()}"
        for subject in (
            subjects.clinic_out("harbor-pt", "referral.request"),
            subjects.AUDIT_ENTRY,
            f"$KV.{topology.GATEWAY_CLIENTS_KV}.harbor-pt",
            f"$KV.{topology.REFERRALS_KV}.anything",
        ):
            assert await hostile.publish_refused(subject), subject
        refused, _ = await hostile.subscribe_refused(subjects.clinic_inbox("harbor-pt"))
        assert refused
    finally:
        await hostile.close()


@pytest.mark.usefixtures("provisioned")
async def test_a_clinic_connection_cannot_act_as_another_clinic(nats_server: EmbeddedNats) -> None:
    """What the gateway opens for harbor-pt's token is harbor-pt's own account: lotus-acu's subjects are refused."""
    identity = credentials.for_clinic("harbor-pt")
    hostile = await Hostile.connect(nats_server.url, "harbor-pt", identity)
    try:
        posing = msgspec.json.encode(referral_request("lotus-acu", "kneadwell-massage"))
        assert await hostile.publish_refused(subjects.clinic_out("lotus-acu", "referral.request"), posing)
        assert (await hostile.attempt(subjects.inbox_read("lotus-acu"), {"after": 0})).refused
        refused, _ = await hostile.subscribe_refused(subjects.clinic_inbox("lotus-acu"))
        assert refused
    finally:
        await hostile.close()
    # And its own subjects work with the very same credentials.
    client = await ClinicClient.connect(nats_server.url, "harbor-pt")
    try:
        receipt = await client.send(referral_request("harbor-pt", "lotus-acu"))
        assert receipt.sequence > 0
    finally:
        await client.close()
