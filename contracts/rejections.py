"""How the hub says no: a typed rejection to the sender, and a dead letter for operators."""

from __future__ import annotations

import enum

import msgspec

from referral_hub.contracts.base import Message, ShortText


class RejectionCode(enum.StrEnum):
    """Stable, machine-readable reasons. Clients may switch on these; never rename one."""

    MALFORMED_JSON = "malformed_json"
    """The payload is not a JSON object."""
    SCHEMA_VIOLATION = "schema_violation"
    """A field is missing, has the wrong type or breaks a constraint."""
    UNKNOWN_MESSAGE_TYPE = "unknown_message_type"
    """The ``type`` tag names no contract."""
    UNSUPPORTED_VERSION = "unsupported_version"
    """``schema_version`` is newer than the hub understands."""
    INVALID_SUBJECT = "invalid_subject"
    """The subject is not ``clinic.<clinic_id>.out.<type>``."""
    SUBJECT_TYPE_MISMATCH = "subject_type_mismatch"
    """The subject's type tokens differ from the payload's ``type``."""
    SENDER_MISMATCH = "sender_mismatch"
    """``sender_clinic`` differs from the clinic the subject authenticates."""
    UNKNOWN_CLINIC = "unknown_clinic"
    """The sender or the addressed clinic is not in the registry."""
    UNKNOWN_MEMBER = "unknown_member"
    """The actor is not a care-team member of the sending clinic."""
    INVALID_RECIPIENT = "invalid_recipient"
    """A clinic addressed itself, or a clinic that does not offer the modality."""
    DUPLICATE_REFERRAL_ID = "duplicate_referral_id"
    """A different message already created a referral with this id."""
    UNSUPPORTED_MESSAGE_TYPE = "unsupported_message_type"
    """A valid contract the hub does not accept on this subject (yet)."""
    UNKNOWN_REFERRAL = "unknown_referral"
    """No referral with this id exists that the sender is a party to (360X: unknown request)."""
    PATIENT_MISMATCH = "patient_mismatch"
    """The referral id is right but ``patient_ref`` differs from the referral's (360X error case)."""
    REFERRAL_CLOSED = "referral_closed"
    """The referral's loop is closed (declined, closed or cancelled); nothing more can happen."""
    WRONG_PARTY = "wrong_party"
    """The sender is a party to the referral, but not the one allowed to make this transition."""
    INVALID_TRANSITION = "invalid_transition"
    """The transition is not allowed from the referral's current state, named in the rejection."""
    STALE_PLAN_VERSION = "stale_plan_version"
    """``plan_version`` is not the successor of the current one, named in the rejection."""
    NOT_ON_CARE_TEAM = "not_on_care_team"
    """The sending clinic is not on the patient's care team."""
    NO_CARE_TEAM = "no_care_team"
    """The patient has no care team, so there is nobody to alert."""
    INVALID_ALERT = "invalid_alert"
    """The alert is well-formed but makes no sense: no modalities, or a validity window already over."""
    UNKNOWN_ALERT = "unknown_alert"
    """No alert with this id exists for the patient."""
    ALERT_NOT_ACTIVE = "alert_not_active"
    """The alert was resolved or has expired; it can no longer be acknowledged, resolved or re-raised."""
    UNKNOWN_FLAG = "unknown_flag"
    """No screening flag with this id (and rule) was delivered to the disputing clinic."""
    UNKNOWN_PAGE = "unknown_page"
    """No page with this id exists."""
    PAGE_NOT_OPEN = "page_not_open"
    """The page was already acknowledged, closed with its alert, or suppressed."""
    PROCESSING_FAILED = "processing_failed"
    """The hub failed to process the message after every retry; operators have it whole."""
    RATE_LIMITED = "rate_limited"
    """The sending clinic is over its rate limit; nothing changed, resend later."""
    MESSAGE_TOO_LARGE = "message_too_large"
    """The submission is larger than the hub accepts; it was not decoded."""
    SEALED_DETAILS_MISMATCH = "sealed_details_mismatch"
    """The sealed patient details are bound to another referral or message, signed by another clinic or key,
    or not sealed to exactly the parties' current keys."""


SECURITY_CODES: frozenset[RejectionCode] = frozenset(
    {
        RejectionCode.SENDER_MISMATCH,
        RejectionCode.UNKNOWN_MEMBER,
        RejectionCode.INVALID_SUBJECT,
        RejectionCode.RATE_LIMITED,
        RejectionCode.MESSAGE_TOO_LARGE,
    }
)
"""Refusals that say something about who is sending, not only about what: a clinic
speaking for another or for a member it does not have, a subject outside the public ones,
a flood, an oversized payload. The audit log records their dead letters as security events.
``unknown_clinic`` is not among them: it is mostly a mistyped recipient, and an unregistered
sender has no credentials to connect with."""


class Rejection(Message, frozen=True, kw_only=True, tag="rejection"):
    """Delivered to the sender's inbox when the hub refuses a message; nothing changed."""

    code: RejectionCode
    reason: str
    offending_message_id: ShortText
    offending_subject: ShortText
    current_state: ShortText = ""
    event_number: int = 0
    current_version: int = 0
    """For ``stale_plan_version``: the version the hub holds."""
    offending_referral_id: ShortText = ""
    """The ``referral_id`` the refused message named, as sent, so the refusal files under its referral."""


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="dead_letter"):
    """A refused or unprocessable message, kept whole for operators to inspect and re-drive.

    ``payload`` holds the original bytes verbatim (base64 in JSON), because a message that
    failed to decode cannot be re-encoded faithfully.
    """

    code: RejectionCode
    reason: str
    service: ShortText
    original_subject: str
    original_stream: ShortText
    original_sequence: int
    original_headers: dict[str, str] = {}
    payload: bytes
    offending_message_id: ShortText
