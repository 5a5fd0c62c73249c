"""Webhook signatures as Standard Webhooks specify them, with a secret of each clinic's own.

Every webhook the hub sends carries three headers (https://www.standardwebhooks.com):

- ``webhook-id``: the notification's id, the same on every retry, for receivers to de-duplicate;
- ``webhook-timestamp``: Unix seconds when this attempt was signed (receivers refuse one more
  than five minutes off, which defeats replay);
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``, one per
  secret the endpoint has, separated by spaces.

Signing and verifying are the ``standardwebhooks`` package's own; this module only chooses the
secrets. Receivers verify with any Standard Webhooks library (``verify`` below is a thin wrapper
for the demo pager and the benchmark's receiver).

**The secrets table.** Each clinic has its own ``whsec_`` secrets, so no clinic's receiver can
sign a page another clinic's receiver would accept. The table is a JSON object keyed by clinic
id; a clinic's value is a list of secrets for all its webhooks, or an object giving an endpoint
(the exact webhook URL in the roster) secrets of its own, with ``"*"`` for the clinic's other
webhooks::

    {
      "harbor-pt": ["whsec_<new>", "whsec_<old>"],
      "lotus-acu": {"*": ["whsec_<...>"], "https://pager.lotus.example/hub": ["whsec_<...>"]}
    }

A secret is ``whsec_`` followed by base64 of at least 24 random bytes; make one with
``python -c 'import base64, secrets; print("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())'``.
The notifications service reads the table from the file named by ``HUB_WEBHOOK_SECRET_FILE`` (a
deployment's way: a file outside the repository, readable by the service only), or inline from
``HUB_WEBHOOK_SECRET`` (how ``hubctl up`` hands its demo pager's table to the services it starts).
A bare string there, the old secret shared by every clinic, is refused at start-up.

**Rotation.** List the new secret first and keep the old one: every webhook is signed with both
(``v1,<new> v1,<old>``), so receivers still on the old secret keep verifying while they switch.
Once they all have, drop the old one.

**Where no secret is configured** for a clinic or endpoint, its webhooks go unsigned (still with
an id and a timestamp); a receiver that verifies refuses them, and the attempt fails.

**Secrets stay out of logs**: the table's ``repr`` shows clinic ids and counts only, and an error
about an entry names the clinic and the entry's position, never a value.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import msgspec
from standardwebhooks import Webhook, WebhookVerificationError
from standardwebhooks.webhooks import EmptyWebhookSecretError

from referral_hub.errors import HubError

SECRET_ENV: Final = "HUB_WEBHOOK_SECRET"  # noqa: S105 - the variable's name, not a secret
SECRET_FILE_ENV: Final = "HUB_WEBHOOK_SECRET_FILE"  # noqa: S105 - same
SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the format's prefix
MIN_SECRET_BYTES: Final = 24
"""Standard Webhooks asks for 24 to 64 random bytes."""
ANY_ENDPOINT: Final = "*"

ID_HEADER: Final = "webhook-id"
TIMESTAMP_HEADER: Final = "webhook-timestamp"
SIGNATURE_HEADER: Final = "webhook-signature"

_Entry = str | list[str] | dict[str, str | list[str]]


class WebhookSecretsError(HubError):
    """The secrets table is malformed; the message never contains a secret."""


def new_secret() -> str:
    """A fresh ``whsec_`` secret of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str, where: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        msg = f"{where} does not start with {SECRET_PREFIX!r}"
        raise WebhookSecretsError(msg)
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        msg = f"{where} is not base64 after {SECRET_PREFIX!r}"
        raise WebhookSecretsError(msg) from None
    if len(key) < MIN_SECRET_BYTES:
        msg = f"{where} is shorter than {MIN_SECRET_BYTES} bytes"
        raise WebhookSecretsError(msg)
    return key


def _signers(value: str | list[str], where: str) -> tuple[Webhook, ...]:
    listed = [value] if isinstance(value, str) else value
    if not listed:
        msg = f"{where} lists no secret"
        raise WebhookSecretsError(msg)
    return tuple(Webhook(_key(secret, f"{where}, secret {n}")) for n, secret in enumerate(listed, 1))


@dataclass(frozen=True)
class WebhookSecrets:
    """Each clinic's signing secrets (newest first), by endpoint; see the module docstring."""

    by_clinic: Mapping[str, Mapping[str, tuple[Webhook, ...]]] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, text: str | bytes) -> WebhookSecrets:
        """The table from its JSON text; :class:`WebhookSecretsError` if it is not one."""
        try:
            table = msgspec.json.decode(text, type=dict[str, _Entry])
        except msgspec.DecodeError:  # also msgspec.ValidationError; neither message is repeated: it may quote a value
            msg = (
                "the webhook secrets are not a JSON object of clinic id -> list of whsec_ secrets "
                "(one secret shared by every clinic is no longer accepted)"
            )
            raise WebhookSecretsError(msg) from None
        by_clinic: dict[str, dict[str, tuple[Webhook, ...]]] = {}
        for clinic, entry in table.items():
            endpoints = entry if isinstance(entry, dict) else {ANY_ENDPOINT: entry}
            by_clinic[clinic] = {
                endpoint: _signers(value, f"clinic {clinic!r}, endpoint {n}")
                for n, (endpoint, value) in enumerate(endpoints.items(), 1)
            }
        return cls(by_clinic)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebhookSecrets:
        """From ``HUB_WEBHOOK_SECRET_FILE`` or ``HUB_WEBHOOK_SECRET``; none configured is an empty table."""
        source = os.environ if env is None else env
        path = source.get(SECRET_FILE_ENV, "")
        text = Path(path).read_bytes() if path else source.get(SECRET_ENV, "").encode()
        return cls.parse(text) if text.strip() else cls()

    def signers(self, clinic: str, endpoint: str) -> tuple[Webhook, ...]:
        """Who signs a webhook of ``clinic`` to ``endpoint``: the endpoint's own, else the clinic's."""
        entry = self.by_clinic.get(clinic, {})
        return entry.get(endpoint) or entry.get(ANY_ENDPOINT, ())

    def __repr__(self) -> str:
        """Clinic ids and how many secrets each has; never a secret."""
        counts = ", ".join(
            f"{clinic}: {sum(map(len, endpoints.values()))}" for clinic, endpoints in sorted(self.by_clinic.items())
        )
        return f"WebhookSecrets({counts})"


def signed_headers(signers: Iterable[Webhook], webhook_id: str, body: bytes, now: float) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt: id, timestamp, and one signature per secret."""
    timestamp = int(now)
    headers = {ID_HEADER: webhook_id, TIMESTAMP_HEADER: str(timestamp)}
    at = datetime.fromtimestamp(timestamp, UTC)
    signatures = [signer.sign(webhook_id, at, body.decode()) for signer in signers]
    if signatures:
        headers[SIGNATURE_HEADER] = " ".join(signatures)
    return headers


def verify(secrets_: Iterable[str | bytes], body: bytes, headers: Mapping[str, str]) -> bool:
    """What a receiver checks, with ``standardwebhooks``: a signature by one of ``secrets_``, a fresh timestamp."""
    plain = {name.lower(): value for name, value in headers.items()}
    for secret in secrets_:
        try:
            Webhook(secret).verify(body, plain, json_parse=False)
        except (WebhookVerificationError, EmptyWebhookSecretError, ValueError):
            # The library lets a malformed header or secret through as ValueError (binascii.Error, unpacking).
            continue
        return True
    return False
