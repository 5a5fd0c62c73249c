"""Provisioning against a real server: idempotent, and the audit stream is append-only."""

from __future__ import annotations

import pytest
from nats.aio.client import Client
from nats.js import api
from nats.js.errors import BadRequestError, ServerError

from referral_hub.runtime.broker.embedded import EmbeddedNats
from referral_hub.runtime.jetstream import streams, topology
from referral_hub.runtime.jetstream.provision import ProvisionError, provision


async def test_provisioning_twice_changes_nothing(provisioned: Client) -> None:
    js = provisioned.jetstream()
    before = {name: (await js.stream_info(name)).config for name in (s.name for s in topology.stream_configs())}

    await provision(js)

    after = {name: (await js.stream_info(name)).config for name in before}
    assert after == before
    consumers = {(spec.stream, spec.durable) for spec in topology.CONSUMERS}
    for stream, durable in consumers:
        assert (await js.consumer_info(stream, durable)).config.durable_name == durable


async def test_audit_stream_is_configured_append_only(provisioned: Client) -> None:
    config = (await provisioned.jetstream().stream_info(streams.AUDIT)).config

    assert config.deny_delete is True
    assert config.deny_purge is True
    assert not config.allow_rollup_hdrs
    assert config.max_age is not None
    assert config.max_age >= 6 * 365 * 24 * 3600


async def test_server_refuses_to_delete_an_audit_entry(provisioned: Client) -> None:
    js = provisioned.jetstream()
    await js.publish("audit.entry", b"{}")

    with pytest.raises((BadRequestError, ServerError)):
        await js.delete_msg(streams.AUDIT, 1)


async def test_server_refuses_to_purge_the_audit_stream(provisioned: Client) -> None:
    js = provisioned.jetstream()
    await js.publish("audit.entry", b"{}")

    with pytest.raises((BadRequestError, ServerError)):
        await js.purge_stream(streams.AUDIT)
    assert (await js.stream_info(streams.AUDIT)).state.messages == 1


def test_embedded_server_fsyncs_every_write(nats_server: EmbeddedNats) -> None:
    assert "sync_interval: always" in nats_server.config_text()


async def test_a_budget_caps_a_stream_and_provisioning_without_it_lifts_it(provisioned: Client) -> None:
    js = provisioned.jetstream()

    await provision(js, budgets={streams.CLINIC_OUT: 1 << 20}, upgrade=True)
    capped = (await js.stream_info(streams.CLINIC_OUT)).config.max_bytes
    await provision(js, upgrade=True)
    lifted = (await js.stream_info(streams.CLINIC_OUT)).config.max_bytes

    assert (capped, lifted) == (1 << 20, -1)


async def test_changing_an_existing_stream_without_an_upgrade_is_refused_and_changes_nothing(
    provisioned: Client,
) -> None:
    js = provisioned.jetstream()

    with pytest.raises(ProvisionError, match="hubctl provision --break-glass"):
        await provision(js, budgets={streams.CLINIC_OUT: 1 << 20})

    assert (await js.stream_info(streams.CLINIC_OUT)).config.max_bytes == -1


def test_a_budget_for_a_stream_the_hub_lacks_is_refused() -> None:
    with pytest.raises(topology.TopologyError, match="NOPE"):
        topology.stream_configs(budgets={"NOPE": 1})


def test_every_stream_refuses_new_messages_when_full_instead_of_dropping_old_ones() -> None:
    assert {config.discard for config in topology.stream_configs()} == {api.DiscardPolicy.NEW}


async def test_the_document_store_is_capped_and_a_budget_changes_the_cap(provisioned: Client) -> None:
    js = provisioned.jetstream()
    default = (await js.stream_info(topology.GATEWAY_DOCUMENTS_STREAM)).config.max_bytes

    await provision(js, budgets={topology.GATEWAY_DOCUMENTS_STREAM: 1 << 30}, upgrade=True)
    budgeted = (await js.stream_info(topology.GATEWAY_DOCUMENTS_STREAM)).config.max_bytes

    assert (default, budgeted) == (topology.GATEWAY_DOCUMENTS_MAX_BYTES, 1 << 30)
