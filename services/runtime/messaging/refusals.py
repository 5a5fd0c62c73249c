"""A domain's refusal of a message, and the sender name of what the hub says itself.

Plain data: the domains decide refusals without I/O; ``runtime.messaging.refusal_outputs`` turns one into
the sender's typed rejection and an operator's dead letter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from referral_hub.contracts.rejections import RejectionCode

HUB_SENDER: Final = "hub"


@dataclass(frozen=True)
class Refusal:
    """Why a message was refused; ``current_state`` names the state it ran into, if any."""

    code: RejectionCode
    reason: str
    current_state: str = ""
    current_version: int = 0
