"""Deterministic ids for outputs, so a redelivered input re-creates identical outputs.

JetStream de-duplicates by ``Nats-Msg-Id``; an output whose id is derived from its input's id
and its role is therefore stored once however often the input is handled.
"""

from __future__ import annotations

import uuid
from typing import Final

ID_NAMESPACE: Final = uuid.UUID("6f1c8a52-8d0e-4f55-9a43-2b1f0c9e7d10")


def derived_id(seed: str, role: str) -> uuid.UUID:
    """The id of the output ``role`` of the input ``seed``."""
    return uuid.uuid5(ID_NAMESPACE, f"{seed}/{role}")
