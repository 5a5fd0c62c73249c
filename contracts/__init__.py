"""Referral Hub public contracts, version 1.

These msgspec Structs are the hub's public API: every message a clinic sends or receives,
every domain event and every audit entry is one of them. The rules that keep them safe to
evolve are enforced by ``referral_hub.contracts.compat`` against the published snapshot in
``contracts/published/``: never remove or retype a field, and give every new field a default.
"""

from referral_hub.contracts.alerts import AlertAck, AlertRaise, AlertResolve
from referral_hub.contracts.audit import AuditEntry
from referral_hub.contracts.base import CONTRACT_VERSION, ContractError, Message
from referral_hub.contracts.codec import ClinicCommand, HubMessage, decode_command, encode
from referral_hub.contracts.plans import PlanUpdate
from referral_hub.contracts.referrals import ReferralRequest, ReferralRequested
from referral_hub.contracts.rejections import DeadLetter, Rejection, RejectionCode

__all__ = [
    "CONTRACT_VERSION",
    "AlertAck",
    "AlertRaise",
    "AlertResolve",
    "AuditEntry",
    "ClinicCommand",
    "ContractError",
    "DeadLetter",
    "HubMessage",
    "Message",
    "PlanUpdate",
    "ReferralRequest",
    "ReferralRequested",
    "Rejection",
    "RejectionCode",
    "decode_command",
    "encode",
]
