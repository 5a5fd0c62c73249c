"""A demo pager for ``hubctl up``: a real webhook receiver standing in for the demo members' phones.

The bundled demo clinics have no contact channels, so ``hubctl up`` gives each member a
webhook to this receiver, and each clinic a fresh ``whsec_`` secret of its own (the table
:attr:`DemoPager.secret` goes to the services as ``HUB_WEBHOOK_SECRET``). It verifies each
page's Standard Webhooks signature with the ``standardwebhooks`` library against the secret of
the clinic in the path (``/<clinic>/<member>``), so a page signed for another clinic is
refused; it shows a repeated ``webhook-id`` as a repeat rather than a new page; and, like a
therapist glancing at a phone, it acknowledges a page a moment later through ``page.ack``, so
the terminal shows the whole loop: alert, page, acknowledgement.

It acknowledges only what the demo itself caused (:class:`DemoActivity`): the alerts the demo
traffic raised, and screening flags on the demo's own patients. A page for an alert a person
raised by hand stays open, as it would on a real hub, for ``hubctl pages`` and ``hubctl page ack``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

import msgspec

from referral_hub.cli.screen import page_severity
from referral_hub.client import ClinicClient, new_id, utc_now
from referral_hub.contracts.paging import PageAck
from referral_hub.contracts.registry import ChannelKind, Clinic, ContactChannel, Registry
from referral_hub.notifications.webhooks import ID_HEADER, new_secret, verify

ACK_AFTER_SECONDS: Final = 1.5


class _Page(msgspec.Struct):
    page_id: str = ""
    dedup_key: str = ""
    clinic: str = ""
    patient_ref: str = ""
    severity: str = ""
    summary: str = ""
    escalation_level: int = 0


class DemoActivity:
    """What the demo traffic sent: the alert ids it raised and the patients it referred.

    Written by the traffic on the event loop, read by the pager's HTTP threads, hence the lock.
    """

    def __init__(self) -> None:
        """Nothing sent yet."""
        self._alerts: set[str] = set()
        self._patients: set[str] = set()
        self._lock = threading.Lock()

    def alert_raised(self, alert_id: str) -> None:
        """The demo raised this alert."""
        with self._lock:
            self._alerts.add(alert_id)

    def patient_referred(self, patient_ref: str) -> None:
        """The demo referred this patient (screening may flag the referral)."""
        with self._lock:
            self._patients.add(patient_ref)

    def caused(self, dedup_key: str, patient_ref: str) -> bool:
        """Whether the page (``alert:<id>:<clinic>`` or ``flag:<id>:<clinic>``) is about something the demo did."""
        source, _, rest = dedup_key.partition(":")
        source_id = rest.partition(":")[0]
        with self._lock:
            if source == "alert":
                return source_id in self._alerts
            return source == "flag" and patient_ref in self._patients


class DemoPager:
    """Receives signed page webhooks on loopback, prints them and acknowledges them."""

    def __init__(self, nats_url: str, say: Callable[[str], None]) -> None:
        """Bind to a free loopback port; fresh secrets per run."""
        self._secrets: dict[str, str] = {}
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._nats_url = nats_url
        self._say = say
        self._loop: asyncio.AbstractEventLoop | None = None
        self.activity = DemoActivity()
        self.acknowledging: list[str] = []
        """The pages it decided to acknowledge, in order."""
        pager = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                path = self.path.strip("/")
                signed = pager.verify(path, body, dict(self.headers))
                # Shown before the answer: the hub sends the next page only after this one is
                # answered, so the screen lists pages in the order they were delivered.
                pager.received(path, body, signed=signed, webhook_id=self.headers.get(ID_HEADER, ""))
                self.send_response(204 if signed else 401)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def secret(self) -> str:
        """The secrets table (JSON, one secret per clinic given channels) for ``HUB_WEBHOOK_SECRET``."""
        return msgspec.json.encode({clinic: [secret] for clinic, secret in self._secrets.items()}).decode()

    def verify(self, path: str, body: bytes, headers: dict[str, str]) -> bool:
        """Whether the page to ``/<clinic>/<member>`` is signed with that clinic's secret."""
        secret = self._secrets.get(path.partition("/")[0])
        return secret is not None and verify([secret], body, headers)

    @property
    def url(self) -> str:
        """Where members' webhooks point."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def with_channels(self, registry: Registry) -> Registry:
        """Every member without a channel gets a webhook here, at ``/<clinic>/<member>``; each clinic a secret."""
        return Registry(clinics=tuple(self.with_channel(clinic) for clinic in registry.clinics))

    def with_channel(self, clinic: Clinic) -> Clinic:
        """The clinic with its members' pages coming here, and nothing else about it changed.

        A member without a channel gets a webhook here; a webhook an earlier run of the demo
        pager gave (loopback, ``/<clinic>/<member>``, another port) is pointed at this one.
        Every other channel, the rotation and any on-call override stay as stored.
        """
        self._secrets.setdefault(clinic.id, new_secret())
        members = tuple(
            msgspec.structs.replace(m, channels=self._channels(clinic.id, m.id, m.channels)) for m in clinic.members
        )
        return msgspec.structs.replace(clinic, members=members)

    def _channels(
        self, clinic_id: str, member_id: str, channels: tuple[ContactChannel, ...]
    ) -> tuple[ContactChannel, ...]:
        here = ContactChannel(kind=ChannelKind.WEBHOOK, address=f"{self.url}/{clinic_id}/{member_id}")
        earlier = re.compile(rf"http://127\.0\.0\.1:\d+/{re.escape(clinic_id)}/{re.escape(member_id)}")
        kept = tuple(here if c.kind == ChannelKind.WEBHOOK and earlier.fullmatch(c.address) else c for c in channels)
        return kept or (here,)

    def start(self) -> None:
        """Serve in a thread; acknowledgements run on the calling event loop."""
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()

    def received(self, path: str, body: bytes, *, signed: bool, webhook_id: str = "") -> None:
        """Print the page; acknowledge it (from the event loop) a moment later, once per ``webhook-id``."""
        page = msgspec.json.decode(body, type=_Page)
        clinic, _, member = path.partition("/")
        with self._lock:
            repeat = signed and (path, webhook_id) in self._seen
            if signed:
                self._seen.add((path, webhook_id))
        verdict = "BAD SIGNATURE, refused" if not signed else "repeat, already shown" if repeat else "signature ok"
        ours = self.activity.caused(page.dedup_key, page.patient_ref)
        left = "" if ours or not signed else " (not from the demo: left open for you, see hubctl pages)"
        self._say(
            f"** page {page.page_id[:8]} -> {member} ({clinic}), level {page.escalation_level}, "
            f"{page_severity(page.severity)}: {page.summary[:90]}{left} [{verdict}]"
        )
        if ours and signed and not repeat and self._loop is not None and page.page_id:
            self.acknowledging.append(page.page_id)
            asyncio.run_coroutine_threadsafe(self._acknowledge(clinic, member, page.page_id), self._loop)

    async def _acknowledge(self, clinic: str, member: str, page_id: str) -> None:
        await asyncio.sleep(ACK_AFTER_SECONDS)
        with contextlib.suppress(Exception):
            client = await ClinicClient.connect(self._nats_url, clinic)
            try:
                await client.send(
                    PageAck(
                        message_id=new_id(),
                        occurred_at=utc_now(),
                        sender_clinic=clinic,
                        actor=member,
                        correlation_id=new_id(),
                        page_id=uuid.UUID(page_id),
                        member=member,
                    )
                )
                self._say(f"-> {member} ({clinic}) acknowledges page {page_id[:8]}")
            finally:
                await client.close()
