"""Inbox reads by event number (``hub.inbox.<id>.read``) and the hub-made inbox consumer, on a real server."""

from __future__ import annotations

import msgspec
import pytest
from nats.aio.client import Client

from referral_hub.client import ClinicClient
from referral_hub.contracts.inbox import InboxPage, InboxRead
from referral_hub.contracts.rejections import Rejection
from referral_hub.runtime.jetstream import subjects
from referral_hub.runtime.messaging.inbox_reads import MAX_PAGE_MESSAGES, InboxReader
from referral_hub.runtime.messaging.inbox_writer import InboxWriter

from .helpers import secure_server
from .test_inbox_writer import delivery

CLINIC, OTHER = "harbor-pt", "lotus-acu"


async def fill(connection: Client, count: int) -> None:
    """``count`` deliveries to CLINIC, each followed by one to OTHER, so the two interleave in the stream."""
    writer = InboxWriter(connection)
    for index in range(count):
        await writer.deliver(delivery(f"mine-{index}"))
        other = delivery(f"theirs-{index}")
        await writer.deliver(type(other)(OTHER, other.message_type, other.message, f"theirs-{index}/inbox/{OTHER}"))


def names(page: InboxPage) -> list[str]:
    return [msgspec.json.decode(stored.message, type=Rejection).offending_message_id for stored in page.messages]


async def test_a_read_returns_exactly_the_messages_after_the_number_asked(provisioned: Client) -> None:
    await fill(provisioned, 40)
    reader = InboxReader(provisioned.jetstream())
    for after in (0, 1, 17, 38):
        page = await reader.page(CLINIC, InboxRead(after=after, limit=5))
        assert names(page) == [f"mine-{index}" for index in range(after, min(after + 5, 40))]
        assert page.last_event_number == 40


async def test_a_read_past_the_newest_number_returns_only_the_newest_number(provisioned: Client) -> None:
    await fill(provisioned, 3)
    page = await InboxReader(provisioned.jetstream()).page(CLINIC, InboxRead(after=3))
    assert (page.last_event_number, page.messages) == (3, ())


async def test_an_empty_inbox_reads_as_number_zero(provisioned: Client) -> None:
    page = await InboxReader(provisioned.jetstream()).page(CLINIC, InboxRead())
    assert (page.last_event_number, page.messages) == (0, ())


async def test_a_page_never_exceeds_the_message_cap(provisioned: Client) -> None:
    await fill(provisioned, 3)
    page = await InboxReader(provisioned.jetstream()).page(CLINIC, InboxRead(limit=MAX_PAGE_MESSAGES * 10))
    assert len(page.messages) == 3


async def test_the_client_reads_the_whole_inbox_across_pages_from_any_number(hub) -> None:
    await fill(hub.connection, 130)
    client = await hub.clinic(CLINIC)
    numbers = [item.event_number async for item in client.inbox(since=21)]
    assert numbers == list(range(21, 131))
    assert await client.inbox_count() == 130


async def test_a_malformed_read_gets_an_error_page_not_silence(hub) -> None:
    await (await hub.clinic(CLINIC)).read_page()  # the hub's reader is up (it retries until it answers)
    reply = await hub.connection.request(subjects.inbox_read(CLINIC), b'{"after": "many"}', timeout=5)
    page = msgspec.json.decode(reply.data, type=InboxPage)
    assert page.error.startswith("malformed read request")


@pytest.fixture
def nats_server(tmp_path, monkeypatch):
    server = secure_server(tmp_path, monkeypatch, [CLINIC, OTHER, "summit-chiro", "kneadwell-massage", "riverside-pt"])
    server.start()
    yield server
    server.stop()


async def test_a_clinic_consumes_its_inbox_through_the_hub_made_consumer_and_resumes(nats_server, provisioned) -> None:
    await fill(provisioned, 5)
    first = await ClinicClient.connect(nats_server.url, CLINIC)
    consumed = []
    async for item in first.consume(batch=2):
        consumed.append(item.event_number)
        if len(consumed) == 3:
            break
    await first.close()
    again = await ClinicClient.connect(nats_server.url, CLINIC)
    rest = []
    async for item in again.consume():
        rest.append(item.event_number)
        if rest[-1] == 5:
            break
    await again.close()
    assert consumed == [1, 2, 3]
    # Each was acknowledged when the next was asked for; the third (taken, never
    # acknowledged) and the fetched fourth were handed back when the first reader stopped.
    assert rest == [3, 4, 5]
