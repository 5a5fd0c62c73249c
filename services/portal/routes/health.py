"""Liveness under ``/portal``, and readiness and metrics at the root, where ``hubctl up`` and Prometheus look."""

from __future__ import annotations

from typing import Final

import prometheus_client
from litestar import get

# --- Health and metrics -----------------------------------------------------------------------


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    """Liveness."""
    return {"status": "ok"}


@get("/health", sync_to_thread=False)
def health() -> dict[str, str]:
    """Readiness at the root, where ``hubctl up`` probes every service."""
    return {"status": "ok"}


@get("/metrics", sync_to_thread=False, media_type="text/plain; version=0.0.4")
def metrics() -> bytes:
    """Prometheus metrics of this process."""
    return prometheus_client.generate_latest()


HANDLERS: Final = (healthz,)
"""Served under ``/portal``."""
ROOT_HANDLERS: Final = (health, metrics)
"""Served at the root."""
