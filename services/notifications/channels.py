"""Delivery channels over real protocols: e-mail over SMTP, signed webhooks, an HTTP SMS gateway.

Each attempt has a timeout; a failed attempt is retried with exponential backoff and jitter,
then the member's next channel is tried. Every attempt is reported (sent, delivered or failed
with its reason) so it can be published as a ``delivery.receipt`` and audited. Deliveries to
different members run concurrently, so a dead channel never holds up anyone else's page.

Webhooks are signed the way Stripe and Slack sign theirs: ``Hub-Signature: t=<unix>,v1=<hex>``
where ``v1`` is HMAC-SHA256 over ``"<t>.<body>"`` with the shared secret; receivers reject a
timestamp outside a tolerance window, which defeats replay. Secrets and SMTP credentials come
from the environment or a secrets file, never from the repository.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import random
import smtplib
import ssl
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Final

import msgspec

from referral_hub.contracts.paging import DeliveryStatus
from referral_hub.contracts.registry import ChannelKind, ContactChannel
from referral_hub.errors import HubError

SIGNATURE_HEADER: Final = "Hub-Signature"
SIGNATURE_TOLERANCE_SECONDS: Final = 300


class DeliveryError(HubError):
    """One delivery attempt failed; the message says why, for the receipt."""


@dataclass(frozen=True)
class Outbound:
    """What a page or notification says, rendered once for every channel."""

    subject: str
    text: str
    payload: dict[str, object]


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to send e-mail."""

    host: str
    port: int = 25
    sender: str = "referral-hub@localhost"
    username: str = ""
    password: str = field(default="", repr=False)
    starttls: bool = False


@dataclass(frozen=True)
class ChannelSettings:
    """Every channel's configuration, and the retry policy."""

    smtp: SmtpSettings | None = None
    webhook_secret: bytes = field(default=b"", repr=False)
    sms_gateway_url: str = ""
    sms_gateway_token: str = field(default="", repr=False)
    timeout_seconds: float = 2.0
    attempts: int = 3
    backoff_seconds: float = 0.2

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ChannelSettings:
        """Read ``HUB_SMTP_*``, ``HUB_WEBHOOK_SECRET`` and ``HUB_SMS_*``; ``*_FILE`` variants hold secrets."""
        source = dict(os.environ if env is None else env)

        def secret(name: str) -> str:
            path = source.get(f"{name}_FILE")
            return Path(path).read_text(encoding="utf-8").strip() if path else source.get(name, "")

        smtp = None
        if source.get("HUB_SMTP_HOST"):
            smtp = SmtpSettings(
                host=source["HUB_SMTP_HOST"],
                port=int(source.get("HUB_SMTP_PORT", "25")),
                sender=source.get("HUB_SMTP_FROM", "referral-hub@localhost"),
                username=source.get("HUB_SMTP_USER", ""),
                password=secret("HUB_SMTP_PASSWORD"),
                starttls=source.get("HUB_SMTP_STARTTLS", "") in {"1", "true", "yes"},
            )
        return cls(
            smtp=smtp,
            webhook_secret=secret("HUB_WEBHOOK_SECRET").encode(),
            sms_gateway_url=source.get("HUB_SMS_GATEWAY_URL", ""),
            sms_gateway_token=secret("HUB_SMS_GATEWAY_TOKEN"),
        )


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``Hub-Signature`` header value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: bytes, header: str, body: bytes, now: float) -> bool:
    """What a receiver checks: a valid HMAC, and a timestamp within the tolerance window."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > SIGNATURE_TOLERANCE_SECONDS:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    if not url.startswith(("http://", "https://")):
        msg = f"not an http(s) URL: {url[:80]}"
        raise DeliveryError(msg)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - scheme checked above
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked above
            return int(response.status)
    except OSError as exc:
        raise DeliveryError(str(exc)[:200]) from exc


def _send_email(settings: SmtpSettings, address: str, outbound: Outbound, timeout: float) -> None:
    message = EmailMessage()
    message["From"] = settings.sender
    message["To"] = address
    message["Subject"] = outbound.subject
    message.set_content(outbound.text)
    try:
        with smtplib.SMTP(settings.host, settings.port, timeout=timeout) as smtp:
            if settings.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.username:
                smtp.login(settings.username, settings.password)
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(str(exc)[:200]) from exc


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt's outcome, for a ``delivery.receipt``."""

    channel: str
    """A :class:`ChannelKind`, or ``none`` when the member has no channel at all."""
    attempt: int
    status: DeliveryStatus
    error: str = ""


Report = Callable[[Attempt], Awaitable[None]]


class Channels:
    """Sends one rendered message over one contact channel."""

    def __init__(self, settings: ChannelSettings) -> None:
        """``settings`` says which channels are configured."""
        self.settings = settings

    async def send(self, channel: ContactChannel, outbound: Outbound) -> DeliveryStatus:
        """One attempt; raises :class:`DeliveryError` with the reason on failure.

        A webhook answering 2xx has the message (``delivered``); an SMTP server or SMS
        gateway accepting it has only taken it on (``sent``).
        """
        timeout = self.settings.timeout_seconds
        if channel.kind is ChannelKind.EMAIL:
            smtp = self.settings.smtp
            if smtp is None:
                msg = "no SMTP server configured (HUB_SMTP_HOST)"
                raise DeliveryError(msg)
            await asyncio.wait_for(asyncio.to_thread(_send_email, smtp, channel.address, outbound, timeout), timeout)
            return DeliveryStatus.SENT
        if channel.kind is ChannelKind.WEBHOOK:
            body = msgspec.json.encode(outbound.payload)
            headers = {"Content-Type": "application/json"}
            if self.settings.webhook_secret:
                headers[SIGNATURE_HEADER] = sign(self.settings.webhook_secret, int(time.time()), body)
            status = await asyncio.wait_for(asyncio.to_thread(_post, channel.address, body, headers, timeout), timeout)
            return _http_outcome(status)
        if not self.settings.sms_gateway_url:
            msg = "no SMS gateway configured (HUB_SMS_GATEWAY_URL)"
            raise DeliveryError(msg)
        body = msgspec.json.encode({"to": channel.address, "text": outbound.text[:480]})
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.settings.sms_gateway_token}"}
        status = await asyncio.wait_for(
            asyncio.to_thread(_post, self.settings.sms_gateway_url, body, headers, timeout), timeout
        )
        _http_outcome(status)
        return DeliveryStatus.SENT

    async def deliver(self, channels: tuple[ContactChannel, ...], outbound: Outbound, report: Report) -> bool:
        """Try each channel in order, each with retries; ``True`` once one takes the message."""
        for channel in channels:
            for attempt in range(1, self.settings.attempts + 1):
                try:
                    status = await self.send(channel, outbound)
                except (DeliveryError, TimeoutError) as exc:
                    await report(Attempt(channel.kind, attempt, DeliveryStatus.FAILED, str(exc) or "timed out"))
                    if attempt < self.settings.attempts:
                        pause = self.settings.backoff_seconds * 2 ** (attempt - 1)
                        await asyncio.sleep(pause * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not security
                    continue
                await report(Attempt(channel.kind, attempt, status))
                return True
        return False


def _http_outcome(status: int) -> DeliveryStatus:
    if 200 <= status < 300:  # noqa: PLR2004 - the HTTP success class
        return DeliveryStatus.DELIVERED
    msg = f"HTTP {status}"
    raise DeliveryError(msg)
