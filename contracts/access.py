"""Access records the clinic portal publishes so that the hub's audit log holds them.

HIPAA access logging (45 CFR 164.312(b)) wants every view of a patient's data and every
login recorded. The portal publishes these on the clinic's own out subject
(``clinic.<id>.out.access.<kind>``) with that clinic's credentials, like any submission:
the audit service chains every stored submission, and the referrals service leaves them to
it. They change nothing in the hub.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from referral_hub.contracts.base import Message, PatientRef, ShortText


class AccessViewed(Message, frozen=True, kw_only=True, tag="access.viewed"):
    """A member (``actor``) viewed a referral or a patient's record in the portal.

    Exported as a FHIR AuditEvent with action ``R`` (read).
    """

    page: ShortText
    referral_id: Annotated[str, msgspec.Meta(max_length=64)] = ""
    patient_ref: PatientRef | None = None


class AccessLogin(Message, frozen=True, kw_only=True, tag="access.login"):
    """A member (``actor``) logged in to the portal with password and TOTP."""

    address: ShortText = ""


class AccessLoginFailed(Message, frozen=True, kw_only=True, tag="access.login_failed"):
    """A login as ``actor`` of this clinic was refused (wrong factor, locked, rate-limited).

    ``reason`` is a code, never the password or code that was typed.
    """

    reason: ShortText
    address: ShortText = ""


ACCESS_TYPES: tuple[type[Message], ...] = (AccessViewed, AccessLogin, AccessLoginFailed)
