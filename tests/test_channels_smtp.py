"""E-mail delivery against a real SMTP server (aiosmtpd) on loopback: plain, implicit TLS, STARTTLS."""

from __future__ import annotations

import contextlib
import email
import ssl
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from referral_hub.contracts.paging import DeliveryStatus
from referral_hub.contracts.registry import ChannelKind, ContactChannel
from referral_hub.notifications.channels import Attempt, Channels, ChannelSettings, Outbound
from referral_hub.runtime.broker.embedded import free_port
from referral_hub.runtime.broker.tls import write_development_pki

USER, PASSWORD = "hub", "relay-password"
MAILBOX = ContactChannel(kind=ChannelKind.EMAIL, address="ana.ruiz@clinic.test")


class MailSink:
    """Keeps every message; refuses the first ``refuse`` DATA commands with a temporary failure."""

    def __init__(self, refuse: int = 0) -> None:
        self.refuse = refuse
        self.seen: list[Message] = []
        self.accepted: list[Message] = []

    async def handle_DATA(self, _server: object, _session: object, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        message = email.message_from_bytes(envelope.content)
        self.seen.append(message)
        if len(self.seen) <= self.refuse:
            return "451 4.3.0 try again later"
        self.accepted.append(message)
        return "250 OK"


def authenticate(_server: object, _session: object, _envelope: object, _mechanism: str, data: object) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    cert, key, ca = write_development_pki(tmp_path_factory.mktemp("smtp-tls"), ["127.0.0.1"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, ca


@contextlib.contextmanager
def serve(sink: MailSink, **options: Any) -> Iterator[int]:
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def page() -> Outbound:
    return Outbound(subject="[CRITICAL] Referral Hub page", text="Patient on apixaban\n", payload={"clinic": "x"})


async def deliver(settings: ChannelSettings, outbound: Outbound) -> tuple[bool, list[Attempt]]:
    attempts: list[Attempt] = []

    async def report(attempt: Attempt) -> None:
        attempts.append(attempt)

    return await Channels(settings).deliver((MAILBOX,), outbound, report), attempts


async def test_plain_smtp_carries_one_message_id_across_retries() -> None:
    sink = MailSink(refuse=1)
    with serve(sink) as port:
        settings = ChannelSettings.from_env({"HUB_SMTP_HOST": "127.0.0.1", "HUB_SMTP_PORT": str(port)})
        settings = ChannelSettings(smtp=settings.smtp, attempts=2, backoff_seconds=0.01)
        delivered, attempts = await deliver(settings, page())
        again, _ = await deliver(settings, page())

    assert delivered
    assert again
    assert [a.status for a in attempts] == [DeliveryStatus.FAILED, DeliveryStatus.SENT]
    assert "451" in attempts[0].error
    ids = [message["Message-ID"] for message in sink.seen]
    assert len(ids) == 3
    assert ids[0]
    assert ids[0] == ids[1], "a retry changed the Message-ID"
    assert ids[2] != ids[0], "another notification reused the Message-ID"
    assert sink.accepted[0]["Subject"] == "[CRITICAL] Referral Hub page"
    assert sink.accepted[0].get_payload(decode=True).strip() == b"Patient on apixaban"


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_smtp_over_implicit_tls_with_a_login(pki: tuple[ssl.SSLContext, Path]) -> None:
    context, ca = pki
    sink = MailSink()
    # aiosmtpd counts only STARTTLS as TLS for AUTH; this SMTP connection is TLS from its first byte.
    options = {"authenticator": authenticate, "auth_required": True, "auth_require_tls": False}
    with serve(sink, ssl_context=context, **options) as port:
        env = {
            "HUB_SMTP_HOST": "127.0.0.1",
            "HUB_SMTP_PORT": str(port),
            "HUB_SMTP_TLS": "1",
            "HUB_SMTP_CA_FILE": str(ca),
            "HUB_SMTP_USER": USER,
            "HUB_SMTP_PASSWORD": PASSWORD,
        }
        delivered, attempts = await deliver(ChannelSettings.from_env(env), page())

    assert delivered, attempts
    assert [a.status for a in attempts] == [DeliveryStatus.SENT]
    [message] = sink.accepted
    assert message["To"] == MAILBOX.address


async def test_smtp_with_starttls(pki: tuple[ssl.SSLContext, Path]) -> None:
    context, ca = pki
    sink = MailSink()
    with serve(sink, tls_context=context, require_starttls=True) as port:
        env = {
            "HUB_SMTP_HOST": "127.0.0.1",
            "HUB_SMTP_PORT": str(port),
            "HUB_SMTP_STARTTLS": "1",
            "HUB_SMTP_CA_FILE": str(ca),
        }
        delivered, attempts = await deliver(ChannelSettings.from_env(env), page())

    assert delivered, attempts
    assert len(sink.accepted) == 1


async def test_an_smtps_server_is_not_spoken_to_in_plain_text_and_port_465_means_implicit_tls(
    pki: tuple[ssl.SSLContext, Path],
) -> None:
    context, _ = pki
    sink = MailSink()
    with serve(sink, ssl_context=context) as port:
        plain = ChannelSettings.from_env({"HUB_SMTP_HOST": "127.0.0.1", "HUB_SMTP_PORT": str(port)})
        settings = ChannelSettings(smtp=plain.smtp, attempts=1, timeout_seconds=1.0)
        delivered, attempts = await deliver(settings, page())

    smtps = ChannelSettings.from_env({"HUB_SMTP_HOST": "mail.example", "HUB_SMTP_PORT": "465"}).smtp
    assert not delivered
    assert attempts[0].status is DeliveryStatus.FAILED
    assert sink.accepted == []
    assert smtps is not None
    assert smtps.implicit_tls
