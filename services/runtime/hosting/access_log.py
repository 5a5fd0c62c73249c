"""One JSON access-log line per HTTP request of the gateway and the portal, with no PHI.

A line names the method, the route template (``/fhir/Task/{task_id}``, never the id), the
status and the duration. The path itself, the query string (a FHIR search can name a
patient), headers, cookies and bodies are never logged, so no patient reference, name or
referral reason can reach the log through this line. A request id (``X-Request-ID`` when the
client sent a well-formed one, else a new one) is bound to every line logged while the
request is handled, and sent back in the response.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Final

import structlog
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER: Final = b"x-request-id"
_WELL_FORMED: Final = re.compile(rb"^[A-Za-z0-9._-]{8,64}$")
log = structlog.get_logger("access")


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's request id when it is a plain token, else a fresh one (never a value to be logged raw)."""
    sent = next((value for name, value in headers if name.lower() == REQUEST_ID_HEADER), b"")
    return sent.decode() if _WELL_FORMED.match(sent) else uuid.uuid4().hex


class AccessLog(ASGIMiddleware):
    """Logs ``http_request`` once the response has started, and binds ``request_id`` meanwhile."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Run the app, noting the status it answers with."""
        started = time.perf_counter()
        rid = request_id(list(scope.get("headers", [])))
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, rid.encode())]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=rid):
            try:
                await next_app(scope, receive, sending)
            finally:
                log.info(
                    "http_request",
                    method=scope.get("method", ""),
                    route=scope.get("path_template", "unmatched"),
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 1),
                )
