"""Paging against a real nats-server, a real webhook receiver and a real SMTP server, on a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import pytest
from aiosmtpd.controller import Controller
from nats.aio.client import Client
from structlog.testing import capture_logs

from referral_hub.audit import app as audit_app
from referral_hub.client import new_id, utc_now
from referral_hub.contracts.alerts import AlertRaised, Severity
from referral_hub.contracts.base import Modality
from referral_hub.contracts.codec import decode_hub_message
from referral_hub.contracts.paging import (
    DeliveryReceipt,
    NotificationQueued,
    PageAck,
    PageAcknowledged,
    PageSuppressed,
    PageTriggered,
)
from referral_hub.contracts.referrals import ReferralTransitioned
from referral_hub.contracts.registry import ChannelKind, Clinic, ContactChannel, Member, Role, Rotation, WorkingHours
from referral_hub.contracts.rejections import Rejection, RejectionCode
from referral_hub.notifications import app as notifications_app
from referral_hub.notifications.channels import Channels, ChannelSettings, Outbound, SmtpSettings
from referral_hub.notifications.page_rules import EscalationPolicy, Page, PageStatus
from referral_hub.notifications.webhooks import WebhookSecrets, new_secret, signed_headers, verify
from referral_hub.referrals import app as referrals_app
from referral_hub.runtime.broker.embedded import EmbeddedNats, free_port
from referral_hub.runtime.hosting.service import ServiceApp
from referral_hub.runtime.jetstream import streams, subjects, topology
from referral_hub.runtime.jetstream.registry_cache import store_clinic
from referral_hub.runtime.messaging.ids import derived_id

from .conftest import start_services
from .helpers import (
    RunningHub,
    acked_through,
    alert_raise,
    counted,
    dead_letters,
    eventually,
    hubctl,
    metric_value,
    referral_request,
    stream_entries,
    stream_messages,
)
from .lifecycle_model import command

PT, ACU, MASSAGE = "harbor-pt", "lotus-acu", "kneadwell-massage"
SECRETS = {clinic: new_secret() for clinic in (PT, ACU, MASSAGE)}
"""Each clinic's own webhook secret."""
PATIENT = "pt-paging"
WEDNESDAY_NOON = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)
GATEWAY_TOKEN = "gateway-token"  # noqa: S105 - the fake gateway's own token
SLOW_SECONDS = 3.0
"""Longer than the channel timeout: a receiver that hangs."""
POLICY = EscalationPolicy(delays=(timedelta(minutes=5), timedelta(minutes=5), timedelta(minutes=10)), repeats=0)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """A real HTTP server on loopback that records every POST."""

    received: list[Received] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver.received.append(Received(self.path, dict(self.headers), body))
            if self.path == "/slow":
                time.sleep(SLOW_SECONDS)
            self.send_response(204 if self.path != "/broken" else 500)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()


class MailSink:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], str]] = []

    async def handle_DATA(self, _server: object, _session: object, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content.decode()))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[MailSink, int]]:
    sink = MailSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    yield sink, port
    controller.stop()


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def roster(webhook: WebhookReceiver) -> dict[str, Clinic]:
    def hook(path: str) -> ContactChannel:
        return ContactChannel(kind=ChannelKind.WEBHOOK, address=webhook.url(path))

    def mail(who: str) -> ContactChannel:
        return ContactChannel(kind=ChannelKind.EMAIL, address=f"{who}@clinic.test")

    rotation_start = date(2026, 11, 23)
    return {
        PT: Clinic(
            id=PT,
            name="Harbor PT",
            modalities=(Modality.PHYSICAL_THERAPY,),
            timezone="America/New_York",
            members=(
                Member(id="ana.ruiz", name="Ana", role=Role.CLINICAL_LEAD, channels=(hook("/ana.ruiz"),)),
                Member(id="ben.okafor", name="Ben", role=Role.THERAPIST, channels=(hook("/ben.okafor"),)),
                Member(id="front.harbor", name="Desk", role=Role.FRONT_DESK, channels=(hook("/front.harbor"),)),
            ),
            oncall=Rotation(members=("ben.okafor",), starts_on=rotation_start),
            intake_channels=(hook("/intake/harbor-pt"),),
        ),
        ACU: Clinic(
            id=ACU,
            name="Lotus",
            modalities=(Modality.ACUPUNCTURE,),
            timezone="America/New_York",
            members=(
                Member(id="mei.chen", name="Mei", role=Role.CLINICAL_LEAD, channels=(hook("/mei.chen"),)),
                Member(id="raj.patel", name="Raj", role=Role.THERAPIST, channels=(hook("/raj.patel"),)),
            ),
            oncall=Rotation(members=("raj.patel",), starts_on=rotation_start),
            intake_channels=(hook("/intake/lotus-acu"),),
        ),
        MASSAGE: Clinic(
            id=MASSAGE,
            name="Kneadwell",
            modalities=(Modality.MASSAGE,),
            timezone="America/Chicago",
            members=(
                Member(id="jo.kim", name="Jo", role=Role.CLINICAL_LEAD, channels=(hook("/jo.kim"),)),
                Member(
                    id="sam.lee",
                    name="Sam",
                    role=Role.THERAPIST,
                    channels=(hook("/broken"), mail("sam.lee")),
                ),
            ),
            oncall=Rotation(members=("sam.lee",), starts_on=rotation_start),
            working_hours=WorkingHours(start="08:00", end="18:00", weekdays=(0, 1, 2, 3, 4)),
            intake_channels=(hook("/intake/kneadwell-massage"),),
        ),
    }


def factories(clock: FakeClock, smtp_port: int) -> dict[str, Callable[[str], ServiceApp]]:
    channels = ChannelSettings(
        smtp=SmtpSettings(host="127.0.0.1", port=smtp_port),
        webhook_secrets=WebhookSecrets.parse(json.dumps({clinic: [secret] for clinic, secret in SECRETS.items()})),
        timeout_seconds=2.0,
        attempts=2,
        backoff_seconds=0.01,
    )
    return {
        "referrals": referrals_app.create_app,
        "notifications": partial(
            notifications_app.create_app, policy=POLICY, channels=channels, clock=clock, sweep_interval=0.05
        ),
        "audit": audit_app.create_app,
    }


@dataclass
class PagingHub:
    hub: RunningHub
    clock: FakeClock
    webhook: WebhookReceiver
    mail: MailSink
    smtp_port: int


async def store_roster(connection: Client, webhook: WebhookReceiver) -> None:
    for clinic in roster(webhook).values():
        await store_clinic(connection.jetstream(), clinic)


@pytest.fixture
async def paging_hub(
    nats_server: EmbeddedNats, provisioned: Client, webhook: WebhookReceiver, smtp: tuple[MailSink, int]
) -> AsyncIterator[PagingHub]:
    await store_roster(provisioned, webhook)
    sink, smtp_port = smtp
    clock = FakeClock(WEDNESDAY_NOON)
    tasks, stop, ports = await start_services(nats_server.url, factories(clock, smtp_port))
    running = RunningHub(nats_server.url, provisioned, ports)
    yield PagingHub(running, clock, webhook, sink, smtp_port)
    for client in running.clients.values():
        with contextlib.suppress(Exception):
            await client.close()
    stop.set()
    await asyncio.gather(*tasks)


async def care_team(hub: RunningHub, *recipients: tuple[str, Modality]) -> None:
    for recipient, modality in recipients:
        request = referral_request(sender=PT, recipient=recipient, patient_ref=PATIENT, modality=modality)
        await (await hub.clinic(PT)).send_and_confirm(request)
        answer = await (await hub.clinic(recipient)).send_and_confirm(
            command("accept", recipient, request.referral_id, PATIENT)
        )
        assert isinstance(answer.message, ReferralTransitioned)


async def raise_alert(hub: RunningHub, severity: Severity, alert_id: UUID | None = None, clinic: str = ACU) -> UUID:
    alert = alert_raise(
        clinic,
        PATIENT,
        alert_id=alert_id or new_id(),
        modalities=(Modality.MASSAGE, Modality.PHYSICAL_THERAPY),
        techniques=(),
        severity=severity,
    )
    answer = await (await hub.clinic(clinic)).send_and_confirm(alert)
    assert isinstance(answer.message, AlertRaised), answer.message
    return alert.alert_id


async def events(hub: RunningHub, kind: type) -> list:
    found = []
    for subject, data in await stream_messages(hub.connection, streams.HUB_EVENTS):
        if subject.startswith("hub.event."):
            message = decode_hub_message(data)
            if isinstance(message, kind):
                found.append(message)
    return found


async def triggered(hub: RunningHub, clinic: str, count: int) -> list[PageTriggered]:
    pages = [p for p in await events(hub, PageTriggered) if p.clinic == clinic]
    return pages if len(pages) >= count else []


async def test_an_alert_pages_the_on_call_member_by_a_signed_webhook(paging_hub: PagingHub) -> None:
    hub = paging_hub.hub
    await care_team(hub, (ACU, Modality.ACUPUNCTURE))

    await raise_alert(hub, Severity.RELATIVE)

    [page] = await eventually(lambda: triggered(hub, PT, 1))
    [call] = await eventually(lambda: _async(paging_hub.webhook.on("/ben.okafor")))
    assert page.member == "ben.okafor"
    assert call.json["page_id"] == str(page.page_id)
    assert call.json["severity"] == "error"
    assert call.headers["webhook-id"]
    assert verify([SECRETS[PT]], call.body, call.headers)
    assert not verify([SECRETS[ACU]], call.body, call.headers), "another clinic's secret verified a page"
    receipts = await eventually(lambda: receipts_for(hub, page.page_id, "delivered"))
    assert [(r.member, r.channel) for r in receipts] == [("ben.okafor", "webhook")]
    # The id names this page step for this member, so a step redelivered after a crash repeats it.
    assert call.headers["webhook-id"] == str(receipts[0].notification_id)
    assert receipts[0].notification_id == derived_id(f"{page.page_id}/0/0/0/ben.okafor", "notification")


async def _async(value: object) -> object:
    return value


SWEEPS = "hub_page_sweeps_total"


async def swept_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109 - a polling helper's own deadline is its point
    """Wait until a sweep that began after the call has run and ``condition`` (about what sweeps report) holds."""
    start = metric_value(SWEEPS)

    async def holds() -> bool:
        return metric_value(SWEEPS) >= start + 2 and condition()

    await eventually(holds, timeout)


async def page_record(hub: RunningHub, page_id: UUID) -> Page:
    """The page as stored: what a sweep or a handler wrote before anything it dispatched could be seen."""
    entry = await (await hub.connection.jetstream().key_value(topology.PAGES_KV)).get(str(page_id))
    assert entry.value is not None
    return msgspec.json.decode(entry.value, type=Page)


async def alert_events(hub: RunningHub, alert_id: UUID) -> list[tuple[int, AlertRaised]]:
    """Each ``alert.raised`` for ``alert_id`` with its sequence in HUB_EVENTS, oldest first."""
    found = []
    for sequence, subject, data in await stream_entries(hub.connection, streams.HUB_EVENTS):
        if subject == subjects.domain_event("alert.raised"):
            event = decode_hub_message(data)
            if isinstance(event, AlertRaised) and event.alert_id == alert_id:
                found.append((sequence, event))
    return found


async def receipts_for(hub: RunningHub, page_id: UUID, status: str) -> list[DeliveryReceipt]:
    return [r for r in await events(hub, DeliveryReceipt) if r.page_id == page_id and r.status == status]


async def test_nobody_acknowledging_escalates_through_every_level(paging_hub: PagingHub) -> None:
    hub = paging_hub.hub
    await care_team(hub, (ACU, Modality.ACUPUNCTURE))
    await raise_alert(hub, Severity.RELATIVE)
    await eventually(lambda: triggered(hub, PT, 1))

    paging_hub.clock.now += timedelta(minutes=5)
    await eventually(lambda: triggered(hub, PT, 2))
    paging_hub.clock.now += timedelta(minutes=5)
    pages = await eventually(lambda: triggered(hub, PT, 5))

    assert [(p.escalation_level, p.member) for p in pages] == [
        (0, "ben.okafor"),
        (1, "ana.ruiz"),
        (2, "ana.ruiz"),
        (2, "ben.okafor"),
        (2, "front.harbor"),
    ]
    await eventually(lambda: _async(paging_hub.webhook.on("/front.harbor")))


async def test_an_acknowledgement_stops_the_escalation_and_tells_the_team(paging_hub: PagingHub) -> None:
    hub = paging_hub.hub
    await care_team(hub, (ACU, Modality.ACUPUNCTURE))
    await raise_alert(hub, Severity.RELATIVE)
    [page] = await eventually(lambda: triggered(hub, PT, 1))

    result = await hubctl(
        "page", "ack", str(page.page_id), "--member", "ben.okafor", "--clinic", PT, "--nats-url", hub.url
    )
    paging_hub.clock.now += timedelta(minutes=30)
    await counted(SWEEPS, 2)  # a whole sweep ran on the new clock, past every level's deadline

    assert result.status == 0, result.stderr
    stored = await page_record(hub, page.page_id)
    assert (stored.status, stored.level, stored.cycle) == (PageStatus.ACKNOWLEDGED, 0, 0)
    assert len(await triggered(hub, PT, 1)) == 1
    for clinic in (PT, ACU):
        told = [i.message async for i in (await hub.clinic(clinic)).inbox() if isinstance(i.message, PageAcknowledged)]
        assert [(m.member, m.paged_clinic) for m in told] == [("ben.okafor", PT)], clinic


async def test_a_page_is_acknowledged_only_by_the_paged_clinic(paging_hub: PagingHub) -> None:
    hub = paging_hub.hub
    await care_team(hub, (ACU, Modality.ACUPUNCTURE))
    await raise_alert(hub, Severity.RELATIVE)
    [page] = await eventually(lambda: triggered(hub, PT, 1))

    answer = await (await hub.clinic(ACU)).send_and_confirm(
        PageAck(
            message_id=new_id(),
            occurred_at=utc_now(),
            sender_clinic=ACU,
            actor="raj.patel",
            correlation_id=new_id(),
            page_id=page.page_id,
            member="raj.patel",
        )
    )

    assert isinstance(answer.message, Rejection)
    assert answer.message.code == RejectionCode.UNKNOWN_PAGE
    assert PT not in answer.message.reason


async def test_a_re_raised_alert_does_not_page_again(paging_hub: PagingHub) -> None:
    hub = paging_hub.hub
    await care_team(hub, (ACU, Modality.ACUPUNCTURE))
    alert_id = await raise_alert(hub, Severity.RELATIVE)
    [page] = await eventually(lambda: triggered(hub, PT, 1))

    await raise_alert(hub, Severity.RELATIVE, alert_id)
    sequence, again = (await alert_events(hub, alert_id))[-1]
    await acked_through(hub.connection, topology.NOTIFICATIONS_EVENTS, sequence)

    stored = await page_record(hub, page.page_id)
    assert stored.intent.about_message_id == again.message_id  # the re-raise reached the page...
    assert (stored.status, stored.generation, stored.level) == (PageStatus.OPEN, 0, 0)  # ...and did not page it again
    assert len(await triggered(hub, PT, 1)) == 1


async def test_a_dead_channel_falls_back_to_the_members_next_one(paging_hub: PagingHub) -> None:
    hub = paging_hub.hub
    await care_team(hub, (MASSAGE, Modality.MASSAGE))

    await raise_alert(hub, Severity.RELATIVE, clinic=PT)

    [page] = await eventually(lambda: triggered(hub, MASSAGE, 1))
    [(sender, recipients, content)] = await eventually(lambda: _async(paging_hub.mail.messages))
    failed = await eventually(lambda: receipts_for(hub, page.page_id, "failed"))
    assert recipients == ["sam.lee@clinic.test"]
    assert "apixaban" in content
    assert str(page.page_id) in content
    assert sender == "referral-hub@localhost"
    assert [(r.channel, r.attempt, r.error) for r in failed] == [
        ("webhook", 1, "HTTP 500"),
        ("webhook", 2, "HTTP 500"),
    ]
    assert [r.channel for r in await receipts_for(hub, page.page_id, "sent")] == ["email"]


async def test_a_silence_holds_relative_pages_but_never_an_absolute_one(paging_hub: PagingHub) -> None:
    hub = paging_hub.hub
    await care_team(hub, (ACU, Modality.ACUPUNCTURE))
    silenced = await hubctl(
        "silence", "add", "--clinic", PT, "--for", "1d", "--reason", "fire drill", "--nats-url", hub.url
    )
    assert silenced.status == 0, silenced.stderr
    paging_hub.clock.now = datetime.now(UTC)  # hubctl starts the silence on the wall clock, not the fake one
    await swept_until(lambda: metric_value("hub_silences_active") >= 1)  # the service holds the silence

    await raise_alert(hub, Severity.RELATIVE)
    [suppressed] = await eventually(lambda: events(hub, PageSuppressed))
    await raise_alert(hub, Severity.ABSOLUTE)
    [page] = await eventually(lambda: triggered(hub, PT, 1))

    assert suppressed.clinic == PT
    assert suppressed.silence_id is not None
    assert page.severity == "critical"


async def test_routine_notifications_wait_for_working_hours_but_pages_do_not(paging_hub: PagingHub) -> None:
    hub = paging_hub.hub
    saturday = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)
    paging_hub.clock.now = saturday
    await care_team(hub, (MASSAGE, Modality.MASSAGE))

    queued = await eventually(lambda: _queued_for(hub, MASSAGE))
    await raise_alert(hub, Severity.RELATIVE, clinic=PT)
    await eventually(lambda: triggered(hub, MASSAGE, 1))
    held = paging_hub.webhook.on("/intake/kneadwell-massage")
    paging_hub.clock.now = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)
    [digest] = await eventually(lambda: _async(paging_hub.webhook.on("/intake/kneadwell-massage")))

    assert held == []
    assert queued[0].deferred_until == datetime(2026, 11, 30, 14, 0, tzinfo=UTC)
    assert digest.json["topic"] == "digest"
    assert "new referral" in digest.json["text"]
    assert digest.headers["webhook-id"]
    assert verify([SECRETS[MASSAGE]], digest.body, digest.headers)


async def _queued_for(hub: RunningHub, clinic: str) -> list[NotificationQueued]:
    return [n for n in await events(hub, NotificationQueued) if n.clinic == clinic]


async def test_hubctl_oncall_names_the_member_and_follows_an_override(paging_hub: PagingHub) -> None:
    url = paging_hub.hub.url
    before = await hubctl("oncall", "--clinic", PT, "--at", "2026-11-25T17:00:00+00:00", "--nats-url", url)
    override = await hubctl(
        "oncall", "override", "--clinic", PT, "--member", "ana.ruiz",
        "--from", "2026-11-25T16:00:00+00:00", "--until", "2026-11-25T20:00:00+00:00", "--nats-url", url,
    )  # fmt: skip
    after = await hubctl("oncall", "--clinic", PT, "--at", "2026-11-25T17:00:00+00:00", "--nats-url", url)

    assert override.status == 0, override.stderr
    assert "on call ben.okafor" in before.stdout
    assert "on call ana.ruiz" in after.stdout


async def test_escalation_survives_a_restart_of_the_services(
    nats_server: EmbeddedNats, provisioned: Client, webhook: WebhookReceiver, smtp: tuple[MailSink, int]
) -> None:
    await store_roster(provisioned, webhook)
    clock = FakeClock(WEDNESDAY_NOON)
    tasks, stop, ports = await start_services(nats_server.url, factories(clock, smtp[1]))
    hub = RunningHub(nats_server.url, provisioned, ports)
    await care_team(hub, (ACU, Modality.ACUPUNCTURE))
    await raise_alert(hub, Severity.RELATIVE)
    await eventually(lambda: triggered(hub, PT, 1))
    stop.set()
    await asyncio.gather(*tasks)

    clock.now += timedelta(minutes=5)
    tasks, stop, _ = await start_services(nats_server.url, factories(clock, smtp[1]))
    try:
        pages = await eventually(lambda: triggered(hub, PT, 2))
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for client in hub.clients.values():
            await client.close()

    assert [(p.escalation_level, p.member) for p in pages] == [(0, "ben.okafor"), (1, "ana.ruiz")]


async def test_a_hanging_channel_does_not_hold_up_another_clinics_page(paging_hub: PagingHub) -> None:
    hub = paging_hub.hub
    harbor = roster(paging_hub.webhook)[PT]
    hanging = ContactChannel(kind=ChannelKind.WEBHOOK, address=paging_hub.webhook.url("/slow"))
    members = tuple(msgspec.structs.replace(m, channels=(hanging,)) for m in harbor.members)
    await store_clinic(hub.connection.jetstream(), msgspec.structs.replace(harbor, members=members))
    await care_team(hub, (MASSAGE, Modality.MASSAGE), (ACU, Modality.ACUPUNCTURE))

    started = time.monotonic()
    await raise_alert(hub, Severity.RELATIVE)
    await eventually(lambda: _async(paging_hub.mail.messages))
    mailed_after = time.monotonic() - started
    [page] = await eventually(lambda: triggered(hub, PT, 1))
    timed_out = await eventually(lambda: receipts_for(hub, page.page_id, "failed"), timeout=15)

    assert mailed_after < SLOW_SECONDS
    assert timed_out[0].error.startswith("timed out")


async def test_sms_goes_through_the_http_gateway_with_its_token(webhook: WebhookReceiver) -> None:
    channels = Channels(
        ChannelSettings(sms_gateway_url=webhook.url("/sms"), sms_gateway_token=GATEWAY_TOKEN, attempts=1)
    )
    sms = ContactChannel(kind=ChannelKind.SMS, address="+15555550100")

    status = await channels.send(sms, Outbound(subject="s", text="Page: apixaban", payload={}))

    [call] = webhook.on("/sms")
    assert status == "sent"
    assert call.headers["Authorization"] == "Bearer gateway-token"
    assert call.json == {"to": "+15555550100", "text": "Page: apixaban"}


def test_a_replayed_webhook_signature_is_refused() -> None:
    body = b'{"page_id": "x"}'
    signers = WebhookSecrets.parse(json.dumps({PT: [SECRETS[PT]]})).signers(PT, "https://pt.test/hook")

    assert not verify([SECRETS[PT]], body, signed_headers(signers, "msg_1", body, time.time() - 3600))
    assert verify([SECRETS[PT]], body, signed_headers(signers, "msg_1", body, time.time()))


# --- A roster the service cannot follow: refused where it is set, paged around where it is stored --

UNKNOWN_ZONE = "America/New_Yrok"


async def store_unchecked(hub: RunningHub, clinic: Clinic) -> None:
    """Write ``clinic`` straight into the registry bucket as the admin, past every check ``hubctl`` makes."""
    kv = await hub.connection.jetstream().key_value(topology.REGISTRY_KV)
    await kv.put(f"clinic.{clinic.id}", msgspec.json.encode(clinic))
    await swept_until(lambda: metric_value("hub_rosters_invalid") >= 1)  # the service has read it


def broken(clinic: Clinic, **changes: object) -> Clinic:
    return msgspec.structs.replace(clinic, timezone=UNKNOWN_ZONE, **changes)


async def test_a_broken_roster_still_pages_an_absolute_alert_to_every_member_on_every_channel(
    paging_hub: PagingHub,
) -> None:
    hub = paging_hub.hub
    harbor = roster(paging_hub.webhook)[PT]
    mail = ContactChannel(kind=ChannelKind.EMAIL, address="ben.okafor@clinic.test")
    members = tuple(
        msgspec.structs.replace(m, channels=(*m.channels, mail)) if m.id == "ben.okafor" else m for m in harbor.members
    )
    await care_team(hub, (ACU, Modality.ACUPUNCTURE))
    await store_unchecked(hub, broken(harbor, members=members))
    before = metric_value("hub_roster_invalid_total", fallback="page_everyone")

    with capture_logs() as logged:
        alert_id = await raise_alert(hub, Severity.ABSOLUTE)
        pages = await eventually(lambda: triggered(hub, PT, 3))
        calls = {
            path: await eventually(lambda path=path: _async(paging_hub.webhook.on(path)))
            for path in ("/ana.ruiz", "/ben.okafor", "/front.harbor")
        }
        [(_, recipients, content)] = await eventually(lambda: _async(paging_hub.mail.messages))
        [(sequence, _)] = await alert_events(hub, alert_id)
        await acked_through(hub.connection, topology.NOTIFICATIONS_EVENTS, sequence)

    assert sorted((p.member, p.escalation_level, p.severity) for p in pages) == [
        ("ana.ruiz", 0, "critical"),
        ("ben.okafor", 0, "critical"),
        ("front.harbor", 0, "critical"),
    ]
    assert {path: [c.json["severity"] for c in got] for path, got in calls.items()} == {
        "/ana.ruiz": ["critical"],
        "/ben.okafor": ["critical"],
        "/front.harbor": ["critical"],
    }
    assert recipients == ["ben.okafor@clinic.test"]
    assert str(pages[0].page_id) in content
    assert metric_value("hub_roster_invalid_total", fallback="page_everyone") >= before + 1
    [line] = [e for e in logged if e.get("fallback") == "page_everyone"]
    assert line["log_level"] == "error"
    assert line["clinic"] == PT
    assert any(UNKNOWN_ZONE in problem for problem in line["problems"])
    assert await dead_letters(hub.connection) == []


async def test_a_broken_roster_pages_a_relative_alert_to_the_clinical_leads(paging_hub: PagingHub) -> None:
    hub = paging_hub.hub
    await care_team(hub, (ACU, Modality.ACUPUNCTURE))
    await store_unchecked(hub, broken(roster(paging_hub.webhook)[PT]))
    before = metric_value("hub_roster_invalid_total", fallback="page_leads")

    await raise_alert(hub, Severity.RELATIVE)
    [page] = await eventually(lambda: triggered(hub, PT, 1))
    [call] = await eventually(lambda: _async(paging_hub.webhook.on("/ana.ruiz")))

    assert (page.member, page.escalation_level) == ("ana.ruiz", 0)
    assert call.json["page_id"] == str(page.page_id)
    assert metric_value("hub_roster_invalid_total", fallback="page_leads") >= before + 1


async def test_a_broken_roster_sends_routine_notifications_at_once_instead_of_dead_lettering_them(
    paging_hub: PagingHub,
) -> None:
    hub = paging_hub.hub
    paging_hub.clock.now = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)  # a Saturday: the digest, were hours known
    await store_unchecked(hub, broken(roster(paging_hub.webhook)[ACU]))

    await care_team(hub, (ACU, Modality.ACUPUNCTURE))
    [notice] = await eventually(lambda: _async(paging_hub.webhook.on("/intake/lotus-acu")))
    [queued] = await eventually(lambda: _queued_for(hub, ACU))
    await acked_through(hub.connection, topology.NOTIFICATIONS_EVENTS, await last_sequence(hub, "referral.requested"))

    assert notice.json["topic"] == "referral.inbound"
    assert queued.deferred_until is None
    assert await dead_letters(hub.connection) == []


async def test_a_roster_broken_while_its_digest_waits_sends_the_digest_and_the_sweep_goes_on(
    paging_hub: PagingHub,
) -> None:
    hub = paging_hub.hub
    paging_hub.clock.now = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)  # Saturday: routine notifications wait
    await care_team(hub, (MASSAGE, Modality.MASSAGE))
    [queued] = await eventually(lambda: _queued_for(hub, MASSAGE))
    before = metric_value("hub_roster_invalid_total", fallback="digest_now")

    await store_unchecked(hub, broken(roster(paging_hub.webhook)[MASSAGE]))
    [digest] = await eventually(lambda: _async(paging_hub.webhook.on("/intake/kneadwell-massage")))
    await counted(SWEEPS, 2)

    assert queued.deferred_until == datetime(2026, 11, 30, 14, 0, tzinfo=UTC)
    assert digest.json["topic"] == "digest"
    assert metric_value("hub_roster_invalid_total", fallback="digest_now") == before + 1


async def last_sequence(hub: RunningHub, event: str) -> int:
    return max(seq for seq, subject, _ in await stream_entries(hub.connection, streams.HUB_EVENTS)
               if subject == subjects.domain_event(event))  # fmt: skip


def roster_file(tmp_path: Path, clinic: Clinic, **changes: object) -> Path:
    fields = {
        "members": clinic.members,
        "oncall": clinic.oncall,
        "working_hours": clinic.working_hours,
        "intake_channels": clinic.intake_channels,
        "timezone": clinic.timezone,
        **changes,
    }
    path = tmp_path / "roster.json"
    path.write_bytes(msgspec.json.encode(fields))
    return path


async def stored_clinic(hub: RunningHub, clinic_id: str) -> Clinic:
    entry = await (await hub.connection.jetstream().key_value(topology.REGISTRY_KV)).get(f"clinic.{clinic_id}")
    assert entry.value is not None
    return msgspec.json.decode(entry.value, type=Clinic)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown time zone", f"unknown time zone '{UNKNOWN_ZONE}'"),
        ("zone only this host has", "unknown time zone 'localtime'"),
        ("hours that never begin", "working hours must begin before they end"),
        ("no working day", "working hours name no weekday"),
    ],
)
async def test_hubctl_refuses_a_roster_the_hub_could_not_page_with(
    paging_hub: PagingHub, tmp_path: Path, case: str, expected: str
) -> None:
    hub = paging_hub.hub
    harbor = roster(paging_hub.webhook)[PT]
    changes: dict[str, object] = {
        "unknown time zone": {"timezone": UNKNOWN_ZONE},
        "zone only this host has": {"timezone": "localtime"},
        "hours that never begin": {"working_hours": {"start": "18:00", "end": "08:00"}},
        "no working day": {"working_hours": {"weekdays": []}},
    }[case]

    result = await hubctl("roster", "set", "--clinic", PT, "--file", str(roster_file(tmp_path, harbor, **changes)),
                          "--nats-url", hub.url)  # fmt: skip

    assert result.status == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert await stored_clinic(hub, PT) == harbor


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("silence", "add", "--for", "1e10d", "--reason", "typo"), "longer than the longest allowed, 30 days"),
        (("silence", "add", "--for", "infh", "--reason", "typo"), "more than nothing"),
        (("silence", "add", "--for=-5m", "--reason", "typo"), "more than nothing"),
        (
            ("oncall", "override", "--member", "ana.ruiz", "--from", "2026-11-25T16:00:00+00:00",
             "--until", "2062-11-25T16:00:00+00:00"),
            "an override may last at most 366 days",
        ),
    ],
)  # fmt: skip
async def test_hubctl_refuses_a_duration_or_range_that_would_break_paging(
    paging_hub: PagingHub, args: tuple[str, ...], expected: str
) -> None:
    hub = paging_hub.hub

    result = await hubctl(*args, "--clinic", PT, "--nats-url", hub.url)

    assert result.status == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert await stored_clinic(hub, PT) == roster(paging_hub.webhook)[PT]


async def test_hubctl_oncall_names_a_broken_roster_instead_of_failing(paging_hub: PagingHub) -> None:
    hub = paging_hub.hub
    await store_unchecked(hub, broken(roster(paging_hub.webhook)[PT]))

    result = await hubctl("oncall", "--clinic", PT, "--nats-url", hub.url)

    assert result.status == 1
    assert f"unknown time zone '{UNKNOWN_ZONE}'" in result.stderr
    assert "Traceback" not in result.stderr
