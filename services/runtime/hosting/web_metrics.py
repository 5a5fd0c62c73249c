"""Metrics and readiness of the two HTTP front ends (gateway, portal), on a port apart from the UI.

Requests are counted by Litestar's own Prometheus middleware (a kept library rather than a
hand-written one): rate, a latency histogram, errors and requests in progress, labelled by
method, route template (``group_path``: ``/fhir/Task/{task_id}``, never an id) and status.
Requests in progress on the portal's ``/portal/events`` route are its live (SSE) connections.

The families are served by the same stdlib server the services use (``health.HealthServer``)
on its own port, so Prometheus and probes never share a port, a thread pool or a rate limit
with clinics, and ``/metrics`` shows this process's families only. ``/health`` is a NATS
round trip refreshed every two seconds: a front end whose broker is paused is not ready.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Final

from litestar.plugins.prometheus import PrometheusConfig
from litestar.types import Middleware
from nats.aio.client import Client
from prometheus_client import Counter

from referral_hub.runtime.hosting import metrics
from referral_hub.runtime.hosting.access_log import AccessLog
from referral_hub.runtime.hosting.health import REFRESH_SECONDS, HealthServer, Readiness, answers
from referral_hub.runtime.hosting.metrics import NATS_CONNECTED

REQUEST_FAMILIES: Final = ("requests", "request_duration_seconds", "requests_in_progress", "requests_error")
"""The families Litestar's middleware makes, after the ``hub_<app>_http`` prefix (counters without ``_total``)."""
REST_HOOK_DELIVERIES: Final = Counter(
    "hub_gateway_rest_hook_deliveries_total",
    "Rest-hook notifications POSTed to clinics' endpoints, by outcome (delivered, refused, unreachable).",
    ["outcome"],
)
REST_HOOK_OUTCOMES: Final = ("delivered", "refused", "unreachable")


def middleware(app: str) -> list[Middleware]:
    """What ``app`` (``gateway`` or ``portal``) wraps every request in: its request metrics, then its access log."""
    return [request_metrics(app).middleware, AccessLog()]


def request_metrics(app: str) -> PrometheusConfig:
    """The middleware configuration for ``app`` (``gateway`` or ``portal``); its families are shown from now on."""
    prefix = f"hub_{app}_http"
    metrics.expose(f"{prefix}_{family}" for family in REQUEST_FAMILIES)
    metrics.expose({"hub_nats_connected"})
    if app == "gateway":
        metrics.count_from_zero(REST_HOOK_DELIVERIES, REST_HOOK_OUTCOMES)
        metrics.expose({"hub_gateway_rest_hook_deliveries"})
    return PrometheusConfig(app_name=app, prefix=prefix, group_path=True, exclude_unhandled_paths=True)


@contextlib.asynccontextmanager
async def metrics_port(
    app: str, port: int | None, host: str, connection: Callable[[], Client | None]
) -> AsyncIterator[None]:
    """Serve ``/metrics`` and ``/health`` on ``port`` (none when ``None``) while the app runs.

    ``connection`` gives the app's NATS connection once its lifespan has opened it.
    """
    if port is None:
        yield
        return
    server = HealthServer(port, host)
    server.start()
    refreshing = asyncio.create_task(_refresh(server, app, connection), name=f"{app}-readiness")
    try:
        yield
    finally:
        refreshing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refreshing
        server.stop()


async def _refresh(server: HealthServer, app: str, connection: Callable[[], Client | None]) -> None:
    while True:
        current = connection()
        connected = current is not None and await answers(current)
        NATS_CONNECTED.labels(app).set(1 if connected else 0)
        server.readiness = Readiness(ready=connected, checks={"nats_connected": connected})
        await asyncio.sleep(REFRESH_SECONDS)
