"""Delivery channels over real protocols: e-mail over SMTP, signed webhooks, an HTTP SMS gateway.

Each attempt has a deadline; a failed attempt is retried with exponential backoff and jitter,
then the member's next channel is tried. Every attempt is reported (sent, delivered or failed
with its reason) so it can be published as a ``delivery.receipt`` and audited. Deliveries to
different members run concurrently, so a dead channel never holds up anyone else's page.

**A page reported delivered was received by the receiver it was addressed to.**

- Attempts are coroutines, not threads: when the deadline passes the attempt is cancelled and
  its connection closed before the retry starts, so a late first attempt can never land
  alongside its retry.
- HTTP (webhooks, the SMS gateway) goes through ``httpx`` with redirects never followed: a 3xx
  answer is a failed attempt whose reason names the status and the ``Location``. A request
  goes to the configured URL only, so the gateway's token (and a webhook's signed headers)
  reach no other origin. Proxies named in the environment are not used.
- Every notification carries an id, the same across its retries and fallback channels, for
  receivers to de-duplicate: the ``webhook-id`` header, the e-mail's ``Message-ID``, and the SMS
  gateway's ``Idempotency-Key`` header. A caller may set it (:attr:`Outbound.notification_id`);
  otherwise :meth:`Channels.deliver` draws a fresh one per delivery.

**Webhooks** are signed as Standard Webhooks specify (``webhook-id``, ``webhook-timestamp``,
``webhook-signature: v1,<base64>``) with the secrets of the clinic the notification is for;
:mod:`referral_hub.notifications.webhooks` says where those secrets come from
(``HUB_WEBHOOK_SECRET_FILE``), how they rotate, and how they are kept out of logs.

**E-mail** goes through ``aiosmtplib``: ``HUB_SMTP_HOST``, ``_PORT``, ``_FROM``, ``_USER``,
``_PASSWORD`` (or ``_PASSWORD_FILE``); implicit TLS with ``HUB_SMTP_TLS=1`` or on port 465,
STARTTLS with ``HUB_SMTP_STARTTLS=1``, plain otherwise; ``HUB_SMTP_CA_FILE`` names a CA bundle
to trust instead of the system's. **SMS** goes to a generic HTTP gateway
(``HUB_SMS_GATEWAY_URL``, ``HUB_SMS_GATEWAY_TOKEN`` or ``_TOKEN_FILE``, sent as a bearer token).
Secrets come from the environment or secrets files, never from the repository.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Final

import aiosmtplib
import httpx
import msgspec

from referral_hub.contracts.paging import DeliveryStatus
from referral_hub.contracts.registry import ChannelKind, ContactChannel
from referral_hub.errors import HubError
from referral_hub.notifications.rendering import Attempt, Outbound
from referral_hub.notifications.webhooks import WebhookSecrets, signed_headers

__all__ = [
    "Attempt",
    "ChannelSettings",
    "Channels",
    "DeliveryError",
    "Outbound",
    "Report",
    "SmtpSettings",
    "new_notification_id",
]

IMPLICIT_TLS_PORT: Final = 465
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
USER_AGENT: Final = "referral-hub-notifications"
HTTP_CONNECTIONS: Final = 200
"""Open connections to webhook receivers and the SMS gateway at once; more wait (within their timeout)."""
HTTP_KEEPALIVE_SECONDS: Final = 30.0
LOCATION_SHOWN: Final = 120
"""How much of a redirect's ``Location`` a failed attempt's reason quotes."""
_TRUE: Final = frozenset({"1", "true", "yes"})


class DeliveryError(HubError):
    """One delivery attempt failed; the message says why, for the receipt."""


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to send e-mail."""

    host: str
    port: int = 25
    sender: str = "referral-hub@localhost"
    username: str = ""
    password: str = field(default="", repr=False)
    starttls: bool = False
    implicit_tls: bool = False
    """TLS from the first byte (SMTPS, port 465), rather than upgrading with STARTTLS."""
    ca_file: str = ""
    """A CA bundle to trust instead of the system's (a private mail relay)."""


@dataclass(frozen=True)
class ChannelSettings:
    """Every channel's configuration, and the retry policy."""

    smtp: SmtpSettings | None = None
    webhook_secrets: WebhookSecrets = field(default_factory=WebhookSecrets)
    sms_gateway_url: str = ""
    sms_gateway_token: str = field(default="", repr=False)
    timeout_seconds: float = 2.0
    attempts: int = 3
    backoff_seconds: float = 0.2

    def working_kinds(self) -> frozenset[ChannelKind]:
        """The channel kinds this service can deliver on: webhooks always, e-mail and SMS once configured."""
        kinds = {ChannelKind.WEBHOOK}
        if self.smtp is not None:
            kinds.add(ChannelKind.EMAIL)
        if self.sms_gateway_url:
            kinds.add(ChannelKind.SMS)
        return frozenset(kinds)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ChannelSettings:
        """Read ``HUB_SMTP_*``, ``HUB_WEBHOOK_SECRET*`` and ``HUB_SMS_*``; ``*_FILE`` variants hold secrets."""
        source = dict(os.environ if env is None else env)

        def secret(name: str) -> str:
            path = source.get(f"{name}_FILE")
            return Path(path).read_text(encoding="utf-8").strip() if path else source.get(name, "")

        smtp = None
        if source.get("HUB_SMTP_HOST"):
            port = int(source.get("HUB_SMTP_PORT", "25"))
            smtp = SmtpSettings(
                host=source["HUB_SMTP_HOST"],
                port=port,
                sender=source.get("HUB_SMTP_FROM", "referral-hub@localhost"),
                username=source.get("HUB_SMTP_USER", ""),
                password=secret("HUB_SMTP_PASSWORD"),
                starttls=source.get("HUB_SMTP_STARTTLS", "").lower() in _TRUE,
                implicit_tls=source.get("HUB_SMTP_TLS", "").lower() in _TRUE or port == IMPLICIT_TLS_PORT,
                ca_file=source.get("HUB_SMTP_CA_FILE", ""),
            )
        return cls(
            smtp=smtp,
            webhook_secrets=WebhookSecrets.from_env(source),
            sms_gateway_url=source.get("HUB_SMS_GATEWAY_URL", ""),
            sms_gateway_token=secret("HUB_SMS_GATEWAY_TOKEN"),
        )


def new_notification_id() -> str:
    """A fresh notification id (Standard Webhooks style, ``msg_<hex>``)."""
    return f"msg_{uuid.uuid4().hex}"


@contextlib.asynccontextmanager
async def _deadline(seconds: float) -> AsyncIterator[None]:
    """Cancel the attempt (closing its connection) when ``seconds`` pass, and say so."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        msg = f"timed out after {seconds:g} s; the attempt was cancelled"
        raise DeliveryError(msg) from None


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:LOCATION_SHOWN])


async def _post(client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str], seconds: float) -> int:
    """POST ``body`` to ``url`` only; the status of a 2xx answer, else :class:`DeliveryError`."""
    if not url.startswith(("http://", "https://")):
        msg = f"not an http(s) URL: {_printable(url)[:80]}"
        raise DeliveryError(msg)
    response: httpx.Response | None = None
    try:
        async with _deadline(seconds):
            request = client.build_request(
                "POST", url, content=body, headers={"User-Agent": USER_AGENT, **headers}, timeout=seconds
            )
            response = await client.send(request, stream=True)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise DeliveryError(_reason(exc)) from exc
    finally:
        # Once the status is in, the attempt's outcome is known: the body is never read, and
        # closing (outside the deadline) cannot turn an answer into a failure.
        if response is not None:
            with contextlib.suppress(httpx.HTTPError, OSError):
                await response.aclose()
    status, location = response.status_code, response.headers.get("location", "")
    if 300 <= status < 400:  # noqa: PLR2004 - the HTTP redirection class, 304 included: nothing was delivered
        msg = f"HTTP {status} redirect to {_printable(location)!r} not followed"
        raise DeliveryError(msg)
    if not httpx.codes.is_success(status):
        msg = f"HTTP {status}"
        raise DeliveryError(msg)
    return status


def _email(settings: SmtpSettings, address: str, outbound: Outbound) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.sender
    message["To"] = address
    message["Subject"] = outbound.subject
    domain = settings.sender.rpartition("@")[2] or "referral-hub"
    message["Message-ID"] = f"<{outbound.notification_id}@{domain}>"
    message.set_content(outbound.text)
    return message


async def _send_email(
    settings: SmtpSettings, address: str, outbound: Outbound, seconds: float, tls: ssl.SSLContext
) -> None:
    """Hand the message to the SMTP server: implicit TLS, STARTTLS or plain, as configured."""
    smtp = aiosmtplib.SMTP(
        hostname=settings.host,
        port=settings.port,
        username=settings.username or None,
        password=settings.password or None,
        timeout=seconds,
        use_tls=settings.implicit_tls,
        start_tls=settings.starttls and not settings.implicit_tls,
        tls_context=tls,
    )
    try:
        async with _deadline(seconds):
            await smtp.connect()
            await smtp.send_message(_email(settings, address, outbound))
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise DeliveryError(_reason(exc)) from exc
    finally:
        # Accepted is accepted: no QUIT that could outlast the deadline and turn it into a failure.
        smtp.close()


Report = Callable[[Attempt], Awaitable[None]]


class Channels:
    """Sends one rendered message over one contact channel."""

    def __init__(self, settings: ChannelSettings) -> None:
        """``settings`` says which channels are configured."""
        self.settings = settings
        self._tls = ssl.create_default_context()
        smtp = settings.smtp
        self._smtp_tls = ssl.create_default_context(cafile=smtp.ca_file) if smtp and smtp.ca_file else self._tls
        # One client for every webhook and SMS POST, so connections to a receiver are kept
        # and reused: a client (and a TCP, maybe TLS, handshake) per page cost more CPU than
        # the rest of paging together at 200 alerts/s. Never redirects, never reads proxies
        # or certificates from the environment.
        self._http = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            verify=self._tls,
            limits=httpx.Limits(max_connections=HTTP_CONNECTIONS, keepalive_expiry=HTTP_KEEPALIVE_SECONDS),
        )

    async def send(self, channel: ContactChannel, outbound: Outbound) -> DeliveryStatus:
        """One attempt; raises :class:`DeliveryError` with the reason on failure.

        A webhook answering 2xx has the message (``delivered``); an SMTP server or SMS
        gateway accepting it has only taken it on (``sent``). An ``outbound`` without an id
        gets a fresh one for this attempt.
        """
        if not outbound.notification_id:
            outbound = dataclasses.replace(outbound, notification_id=new_notification_id())
        timeout = self.settings.timeout_seconds
        if channel.kind is ChannelKind.EMAIL:
            smtp = self.settings.smtp
            if smtp is None:
                msg = "no SMTP server configured (HUB_SMTP_HOST)"
                raise DeliveryError(msg)
            await _send_email(smtp, channel.address, outbound, timeout, self._smtp_tls)
            return DeliveryStatus.SENT
        if channel.kind is ChannelKind.WEBHOOK:
            body = msgspec.json.encode(outbound.payload)
            signers = self.settings.webhook_secrets.signers(outbound.signing_clinic, channel.address)
            headers = {
                "Content-Type": "application/json",
                **signed_headers(signers, outbound.notification_id, body, time.time()),
            }
            await _post(self._http, channel.address, body, headers, timeout)
            return DeliveryStatus.DELIVERED
        if not self.settings.sms_gateway_url:
            msg = "no SMS gateway configured (HUB_SMS_GATEWAY_URL)"
            raise DeliveryError(msg)
        body = msgspec.json.encode({"to": channel.address, "text": outbound.text[:480]})
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: outbound.notification_id}
        if self.settings.sms_gateway_token:
            headers["Authorization"] = f"Bearer {self.settings.sms_gateway_token}"
        await _post(self._http, self.settings.sms_gateway_url, body, headers, timeout)
        return DeliveryStatus.SENT

    async def deliver(self, channels: tuple[ContactChannel, ...], outbound: Outbound, report: Report) -> bool:
        """Try each channel in order, each with retries; ``True`` once one takes the message.

        Every attempt carries the same notification id, so a receiver that saw an attempt the
        hub counted as failed (it answered after the deadline) can tell the retry is no news.
        """
        if not outbound.notification_id:
            outbound = dataclasses.replace(outbound, notification_id=new_notification_id())
        for channel in channels:
            for attempt in range(1, self.settings.attempts + 1):
                try:
                    status = await self.send(channel, outbound)
                except DeliveryError as exc:
                    await report(Attempt(channel.kind, attempt, DeliveryStatus.FAILED, str(exc)))
                    if attempt < self.settings.attempts:
                        pause = self.settings.backoff_seconds * 2 ** (attempt - 1)
                        await asyncio.sleep(pause * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not security
                    continue
                await report(Attempt(channel.kind, attempt, status))
                return True
        return False
