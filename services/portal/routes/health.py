"""Liveness under ``/portal``, and an answer at the root.

Metrics and NATS-aware readiness are served on the portal's metrics port
(``runtime.hosting.web_metrics``), apart from the pages, with the portal's own families only.
"""

from __future__ import annotations

from typing import Final

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


HANDLERS: Final = (healthz,)
"""Served under ``/portal``."""
ROOT_HANDLERS: Final = (health,)
"""Served at the root."""
