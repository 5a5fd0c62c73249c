"""Webhook and SMS delivery against real HTTP receivers on loopback: redirects, timeouts, signatures, ids."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from referral_hub.contracts.paging import DeliveryStatus
from referral_hub.contracts.registry import ChannelKind, ContactChannel
from referral_hub.errors import HubError
from referral_hub.notifications.channels import Attempt, Channels, ChannelSettings, Outbound
from referral_hub.notifications.webhooks import WebhookSecrets

from .helpers import eventually
from .http_receiver import Handle, Request, answer, http_server, response

CLINIC_A, CLINIC_B = "harbor-pt", "lotus-acu"
SECRET_A = "whsec_" + base64.b64encode(b"a" * 32).decode()
SECRET_B = "whsec_" + base64.b64encode(b"b" * 32).decode()
NEW_A = "whsec_" + base64.b64encode(b"n" * 32).decode()
TOKEN = "gateway-token"  # noqa: S105 - the fake gateway's own token
TIMEOUT = 0.5
SLOW_STEPS = 8
SLOW_STEP_SECONDS = 0.25
"""The slow receiver's answer takes SLOW_STEPS * SLOW_STEP_SECONDS, well past TIMEOUT, yet each step within it."""


def secrets_table(table: dict[str, object]) -> WebhookSecrets:
    return WebhookSecrets.parse(json.dumps(table))


def page(clinic: str = CLINIC_A, **extra: object) -> Outbound:
    return Outbound(
        subject="[CRITICAL] page",
        text="Patient on apixaban",
        payload={"type": "page", "page_id": "p-1", "clinic": clinic, "summary": "apixaban", **extra},
    )


def hook(url: str) -> ContactChannel:
    return ContactChannel(kind=ChannelKind.WEBHOOK, address=url)


async def deliver(channels: Channels, channel: ContactChannel, outbound: Outbound) -> tuple[bool, list[Attempt]]:
    attempts: list[Attempt] = []

    async def report(attempt: Attempt) -> None:
        attempts.append(attempt)

    return await channels.deliver((channel,), outbound, report), attempts


def verified_by(secret: str, request: Request) -> bool:
    try:
        Webhook(secret).verify(request.body, request.headers)
    except WebhookVerificationError:
        return False
    return True


# --- redirects: a failed attempt, never followed, credentials never sent elsewhere ---------------


@pytest.mark.parametrize("status", [301, 302, 303])
@pytest.mark.parametrize("kind", [ChannelKind.WEBHOOK, ChannelKind.SMS])
async def test_a_redirect_is_a_failed_attempt_and_nothing_reaches_its_target(kind: ChannelKind, status: int) -> None:
    async with http_server(answer(200)) as target:
        location = f"{target.url}/elsewhere"
        async with http_server(answer(status, {"Location": location})) as receiver:
            channels = Channels(
                ChannelSettings(
                    sms_gateway_url=f"{receiver.url}/sms",
                    sms_gateway_token=TOKEN,
                    attempts=2,
                    backoff_seconds=0.01,
                )
            )
            channel = hook(f"{receiver.url}/hook") if kind is ChannelKind.WEBHOOK else ContactChannel(
                kind=ChannelKind.SMS, address="+15555550100"
            )  # fmt: skip
            delivered, attempts = await deliver(channels, channel, page())

    leaked = [r.headers.get("authorization") for r in target.requests]
    assert target.requests == [], f"the redirect target was contacted (Authorization: {leaked})"
    assert not delivered
    assert [(a.channel, a.attempt, a.status) for a in attempts] == [
        (kind, 1, DeliveryStatus.FAILED),
        (kind, 2, DeliveryStatus.FAILED),
    ]
    for attempt in attempts:
        assert str(status) in attempt.error
        assert location in attempt.error
    assert len(receiver.requests) == 2
    if kind is ChannelKind.SMS:
        assert {r.headers.get("authorization") for r in receiver.requests} == {f"Bearer {TOKEN}"}


# --- a timed-out attempt is cancelled: its retry is the only delivery ------------------------------


class SlowFirstReceiver:
    """Answers its first request slowly, a header line at a time; counts deliveries by ``webhook-id``.

    A delivery counts once the receiver has written its whole answer with the client still
    there to read it, as a receiver that commits a page only when it can acknowledge it.
    """

    def __init__(self) -> None:
        self.completed: Counter[str | None] = Counter()
        self.abandoned = 0
        self.requests = 0

    async def __call__(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.requests += 1
        webhook_id = request.headers.get("webhook-id")
        if self.requests == 1:
            writer.write(b"HTTP/1.1 204 No Content\r\n")
            await writer.drain()
            for step in range(SLOW_STEPS):
                try:
                    gone = await asyncio.wait_for(reader.read(1), SLOW_STEP_SECONDS) == b""
                except TimeoutError:
                    gone = False
                except ConnectionError:
                    gone = True
                if gone:
                    self.abandoned += 1
                    return
                writer.write(f"X-Slow-{step}: 1\r\n".encode())
                await writer.drain()
            writer.write(b"Connection: close\r\n\r\n")
        else:
            writer.write(response(204))
        await writer.drain()
        self.completed[webhook_id] += 1


def both_answers_finished(slow: SlowFirstReceiver):
    """A probe for ``eventually``: the receiver has seen two requests and finished answering both, either way."""

    async def finished() -> bool:
        return slow.requests >= 2 and slow.abandoned + sum(slow.completed.values()) == slow.requests

    return finished


async def test_a_timed_out_attempt_is_cancelled_so_the_retry_delivers_exactly_once() -> None:
    slow = SlowFirstReceiver()
    async with http_server(slow) as receiver:
        channels = Channels(
            ChannelSettings(
                timeout_seconds=TIMEOUT,
                attempts=3,
                backoff_seconds=0.05,
            )
        )
        started = time.monotonic()
        delivered, attempts = await deliver(channels, hook(f"{receiver.url}/hook"), page())
        took = time.monotonic() - started
        await eventually(both_answers_finished(slow))  # the slow first answer too, by abandoning or completing

    assert delivered
    assert sum(slow.completed.values()) == 1, f"delivered {dict(slow.completed)}"
    assert slow.abandoned == 1
    assert [(a.attempt, a.status) for a in attempts] == [(1, DeliveryStatus.FAILED), (2, DeliveryStatus.DELIVERED)]
    assert "timed out" in attempts[0].error
    assert took < SLOW_STEPS * SLOW_STEP_SECONDS
    [webhook_id] = {r.headers.get("webhook-id") for r in receiver.requests}
    assert webhook_id
    assert slow.completed == {webhook_id: 1}


# --- Standard Webhooks signatures, a secret per clinic --------------------------------------------


def verifying(secret: str) -> Handle:
    async def handle(request: Request, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(response(204 if verified_by(secret, request) else 401))
        await writer.drain()

    return handle


async def test_a_clinics_receiver_accepts_the_hubs_signature_and_refuses_another_clinics() -> None:
    channels = Channels(
        ChannelSettings(webhook_secrets=secrets_table({CLINIC_A: [SECRET_A], CLINIC_B: [SECRET_B]}), attempts=1)
    )
    async with http_server(verifying(SECRET_A)) as receiver:
        url = f"{receiver.url}/pager"
        ours, _ = await deliver(channels, hook(url), page(CLINIC_A))
        # The hub's own page for clinic B, sent to A's receiver, is signed with B's secret.
        theirs, attempts = await deliver(channels, hook(url), page(CLINIC_B))
        # Clinic B's receiver knows B's secret and forges a page to A's.
        body = b'{"type":"page","clinic":"harbor-pt","summary":"forged"}'
        now = datetime.now(UTC)
        forged_headers = {
            "webhook-id": "msg_forged",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(SECRET_B).sign("msg_forged", now, body.decode()),
            "content-type": "application/json",
        }
        async with httpx.AsyncClient() as client:
            forged = await client.post(url, content=body, headers=forged_headers)

    assert ours
    assert not theirs
    assert attempts[0].error == "HTTP 401"
    assert forged.status_code == 401
    first = receiver.requests[0]
    assert verified_by(SECRET_A, first)
    assert not verified_by(SECRET_B, first)
    assert first.headers["webhook-signature"].startswith("v1,")
    assert int(first.headers["webhook-timestamp"]) == pytest.approx(time.time(), abs=5)


async def test_during_a_rotation_both_secrets_sign_and_each_verifies() -> None:
    channels = Channels(ChannelSettings(webhook_secrets=secrets_table({CLINIC_A: [NEW_A, SECRET_A]}), attempts=1))
    async with http_server(answer(204)) as receiver:
        delivered, _ = await deliver(channels, hook(f"{receiver.url}/pager"), page())

    assert delivered
    [request] = receiver.requests
    signatures = request.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(s.startswith("v1,") for s in signatures)
    assert verified_by(NEW_A, request)
    assert verified_by(SECRET_A, request)
    assert not verified_by(SECRET_B, request)
    for signature, secret in zip(signatures, (NEW_A, SECRET_A), strict=True):
        alone = Request(request.method, request.path, {**request.headers, "webhook-signature": signature}, request.body)
        assert verified_by(secret, alone)


async def test_an_endpoint_with_a_secret_of_its_own_is_signed_with_that_one() -> None:
    async with http_server(answer(204)) as receiver:
        special = f"{receiver.url}/special"
        table = {CLINIC_A: {"*": [SECRET_A], special: [NEW_A]}}
        channels = Channels(ChannelSettings(webhook_secrets=secrets_table(table), attempts=1))
        await deliver(channels, hook(special), page())
        await deliver(channels, hook(f"{receiver.url}/other"), page())

    by_path = {r.path: r for r in receiver.requests}
    assert verified_by(NEW_A, by_path["/special"])
    assert not verified_by(SECRET_A, by_path["/special"])
    assert verified_by(SECRET_A, by_path["/other"])


# --- every notification carries an id, the same across retries -----------------------------------


def failing_first(times: int) -> Handle:
    seen: list[int] = []

    async def handle(_request: Request, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(1)
        writer.write(response(500 if len(seen) <= times else 204))
        await writer.drain()

    return handle


@pytest.mark.parametrize(
    "outbound",
    [
        page(),
        Outbound(
            subject="Referral Hub: referral.submitted",
            text="New referral",
            payload={"type": "notification", "topic": "referral.submitted", "clinic": CLINIC_A, "text": "New"},
        ),
    ],
    ids=["page", "routine"],
)
async def test_every_notification_carries_one_id_across_its_retries(outbound: Outbound) -> None:
    handle = failing_first(2)
    channels = Channels(ChannelSettings(attempts=3, backoff_seconds=0.01))
    async with http_server(handle) as receiver:
        delivered, attempts = await deliver(channels, hook(f"{receiver.url}/intake"), outbound)
        again, _ = await deliver(channels, hook(f"{receiver.url}/intake"), outbound)

    assert delivered
    assert again
    assert [a.status for a in attempts] == [DeliveryStatus.FAILED, DeliveryStatus.FAILED, DeliveryStatus.DELIVERED]
    ids = [r.headers.get("webhook-id") for r in receiver.requests]
    assert len(ids) == 4
    assert ids[0]
    assert ids[0] == ids[1] == ids[2], "a retry changed the id"
    assert ids[3] != ids[0], "another notification reused the id"


async def test_an_sms_carries_the_notifications_id_as_its_idempotency_key() -> None:
    async with http_server(failing_first(1)) as gateway:
        channels = Channels(
            ChannelSettings(
                sms_gateway_url=f"{gateway.url}/sms", sms_gateway_token=TOKEN, attempts=2, backoff_seconds=0.01
            )
        )
        sms = ContactChannel(kind=ChannelKind.SMS, address="+15555550100")
        delivered, attempts = await deliver(channels, sms, Outbound("s", "Page", {}))

    assert delivered
    assert [a.status for a in attempts] == [DeliveryStatus.FAILED, DeliveryStatus.SENT]
    keys = {r.headers.get("idempotency-key") for r in gateway.requests}
    assert len(gateway.requests) == 2
    assert len(keys) == 1
    assert None not in keys
    assert {r.headers["authorization"] for r in gateway.requests} == {f"Bearer {TOKEN}"}


async def test_a_notification_id_set_by_the_caller_is_the_one_sent() -> None:
    async with http_server(answer(204)) as receiver:
        channels = Channels(ChannelSettings(attempts=1))
        await deliver(channels, hook(f"{receiver.url}/x"), Outbound("s", "t", {}, notification_id="msg_42"))

    assert receiver.requests[0].headers["webhook-id"] == "msg_42"


# --- where the secrets come from ------------------------------------------------------------------


def test_secrets_come_from_a_file_and_never_show_in_a_repr(tmp_path: Path) -> None:
    path = tmp_path / "webhook-secrets.json"
    path.write_text(f'{{"{CLINIC_A}": ["{NEW_A}", "{SECRET_A}"], "{CLINIC_B}": "{SECRET_B}"}}')

    settings = ChannelSettings.from_env({"HUB_WEBHOOK_SECRET_FILE": str(path)})

    assert len(settings.webhook_secrets.signers(CLINIC_A, "https://a.test/x")) == 2
    assert len(settings.webhook_secrets.signers(CLINIC_B, "https://b.test/x")) == 1
    assert settings.webhook_secrets.signers("kneadwell-massage", "https://c.test/x") == ()
    shown = repr(settings)
    for secret in (NEW_A, SECRET_A, SECRET_B):
        assert secret not in shown
        assert secret.removeprefix("whsec_") not in shown


def test_one_secret_shared_by_every_clinic_is_refused_without_repeating_it() -> None:
    shared = "test-webhook-secret"

    with pytest.raises(HubError, match="shared by every clinic") as refused:
        ChannelSettings.from_env({"HUB_WEBHOOK_SECRET": shared})

    assert shared not in str(refused.value)


@pytest.mark.parametrize("bad", ["not-a-whsec", "whsec_***", "whsec_" + base64.b64encode(b"short").decode()])
def test_a_malformed_secret_is_refused_naming_the_clinic_not_the_value(bad: str) -> None:
    with pytest.raises(HubError, match=CLINIC_B) as refused:
        ChannelSettings.from_env({"HUB_WEBHOOK_SECRET": f'{{"{CLINIC_A}": ["{SECRET_A}"], "{CLINIC_B}": ["{bad}"]}}'})

    assert bad not in str(refused.value)
    assert SECRET_A not in str(refused.value)
