"""The clinic portal's wiring: a Litestar app under ``/portal``, its lifespan, templates and headers.

The route handlers live in ``routes/``, one module per group of pages, each listing its
``HANDLERS``; they are thin: they read the session, call the pure rules (``domain``,
``forms``) and the adapters, and render. What they share is in ``web``. Every clinic action
is a contract message sent with the member's own clinic's credentials; every view of patient
data is recorded in the hub's audit log before the page is shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import jinja2
import uvicorn
from litestar import Litestar, Request, Response, Router
from litestar.config.csrf import CSRFConfig
from litestar.contrib.jinja import JinjaTemplateEngine
from litestar.datastructures import ResponseHeader
from litestar.exceptions import NotFoundException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.response import Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from referral_hub.portal.adapters import PortalStore
from referral_hub.portal.routes import (
    audit_receipts,
    health,
    inbox,
    login,
    new_referral,
    pages,
    patients,
    referrals,
    work,
)
from referral_hub.portal.routes import documents as document_routes
from referral_hub.portal.routes.documents import UPLOAD_BODY_BYTES
from referral_hub.portal.web import CSRF_COOKIE, PREFIX, LoginRequiredError, Portal, PortalSettings, see_other
from referral_hub.runtime.hosting import security_headers, web_metrics
from referral_hub.runtime.hosting.tasks import cancel_and_wait
from referral_hub.runtime.jetstream import topology
from referral_hub.screening.rules import load_rules

HERE: Final = Path(__file__).parent
REGISTRY_WAIT_SECONDS: Final = 30.0
SECRET_ENV: Final = "HUB_PORTAL_SECRET"  # noqa: S105 - the name of a variable, not a secret
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


# --- Wiring -----------------------------------------------------------------------------------


def _login_redirect(request: Request[Any, Any, Any], _exc: Exception) -> Response[Any]:
    if request.url.path.endswith("/events"):
        return Response(content="", status_code=401)
    return see_other(f"{PREFIX}/login")


def _too_large(_request: Request[Any, Any, Any], _exc: Exception) -> Response[Any]:
    """A form whose files together pass the body limit: said in words, before anything is stored."""
    each, limit = topology.GATEWAY_DOCUMENT_MAX_BYTES // (1024 * 1024), UPLOAD_BODY_BYTES // (1024 * 1024)
    words = f"The files are too large: at most {each} MiB each, {limit} MiB per form."
    return Template("too_large.html", context={"reason": words}, status_code=413)


def _not_found(_request: Request[Any, Any, Any], _exc: Exception) -> Response[Any]:
    """The same plain 404 for a wrong id and for another clinic's id."""
    return Template("not_found.html", status_code=404)


def template_environment() -> jinja2.Environment:
    """The portal's Jinja environment: its templates, autoescaped, with the globals every page uses."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        # Templates ship with the code: compiled once, never stat-ed again on a render.
        auto_reload=False,
    )
    environment.globals["prefix"] = PREFIX
    pack = load_rules()
    rules = {rule.id: rule for rule in pack.rules}

    def rule_source(rule_id: str) -> str:
        """The public source a rule cites, from the rule pack (matches sent to outsiders carry only the id)."""
        rule = rules.get(rule_id)
        return f"{rule.source}: {pack.sources.get(rule.source, '')}" if rule else ""

    environment.globals["rule_source"] = rule_source
    return environment


def create_app(settings: PortalSettings) -> Litestar:
    """The portal app; its lifespan opens the portal's store and closes every clinic connection."""
    portal = Portal(settings)
    environment = template_environment()

    @contextlib.asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        portal.store = await PortalStore.open(settings.nats_url)
        watch = asyncio.create_task(portal.registry.follow(portal.store.connection.jetstream()), name="portal-registry")
        try:
            await portal.registry.wait_loaded(REGISTRY_WAIT_SECONDS)
            async with web_metrics.metrics_port(
                "portal",
                settings.metrics_port,
                settings.metrics_host,
                lambda: portal.store.connection if portal.store is not None else None,
            ):
                yield
        finally:
            await cancel_and_wait([watch])
            await portal.connections.close()
            await portal.store.close()

    # Replicas behind one address must share the secret (HUB_PORTAL_SECRET); one process may make its own.
    csrf_secret = os.environ.get(SECRET_ENV) or secrets.token_urlsafe(32)
    portal.csrf_secret = csrf_secret
    app = Litestar(
        route_handlers=[
            _router(),
            *health.ROOT_HANDLERS,
            create_static_files_router(path=f"{PREFIX}/static", directories=[HERE / "static"]),
        ],
        lifespan=[lifespan],
        template_config=TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment)),
        csrf_config=CSRFConfig(
            secret=csrf_secret,
            cookie_name=CSRF_COOKIE,
            cookie_path=PREFIX,
            cookie_secure=settings.cookies_secure,
            cookie_httponly=True,
            cookie_samesite="lax",
        ),
        response_headers=[ResponseHeader(name=name, value=value) for name, value in SECURITY_HEADERS.items()],
        # The same headers on the framework's own refusals (404, 405, 413, CSRF 403), which
        # response_headers does not reach.
        before_send=[security_headers.add_missing(SECURITY_HEADERS)],
        exception_handlers={
            LoginRequiredError: _login_redirect,
            NotFoundException: _not_found,
            RequestEntityTooLarge: _too_large,
        },
        state=None,
        middleware=web_metrics.middleware("portal"),
        logging_config=None,  # Litestar's default takes over the root logger; lines stay JSON (runtime.hosting.logs)
    )
    app.state.portal = portal
    app.state.jinja = environment
    return app


def _router() -> Router:
    return Router(
        path=PREFIX,
        route_handlers=[
            *work.HANDLERS,
            *inbox.HANDLERS,
            *health.HANDLERS,
            *login.HANDLERS,
            *new_referral.HANDLERS,
            *document_routes.HANDLERS,
            *referrals.HANDLERS,
            *patients.HANDLERS,
            *audit_receipts.HANDLERS,
            *pages.HANDLERS,
        ],
    )


def run(settings: PortalSettings) -> None:
    """Serve the portal with uvicorn until interrupted."""
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        log_config=None,  # uvicorn's own lines go through the process's JSON logging (runtime.hosting.logs)
        access_log=False,
        timeout_graceful_shutdown=3,
    )


__all__ = ["PortalSettings", "create_app", "run"]
