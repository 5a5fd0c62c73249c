"""Security headers on every HTTP response a door sends, refusals and framework errors included.

Litestar's ``response_headers`` reach the responses of route handlers only: a 404 for an
unknown path, a 405, a 413 or any exception handler's answer leaves without them. This
``before_send`` hook runs on every response the app starts (Litestar wraps ``send`` before
routing), and adds each header the response does not already carry, so a route that sets
its own (a document's sandboxing CSP) keeps it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

API_HEADERS: Final[Mapping[str, str]] = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
"""For an API whose answers are JSON: nothing in them is to be rendered, framed or cached."""

Hook = Callable[[Any, Any], Awaitable[None]]


def add_missing(headers: Mapping[str, str]) -> Hook:
    """A ``before_send`` hook adding ``headers`` to every response that lacks them."""
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]

    async def hook(message: Any, _scope: Any) -> None:  # noqa: ANN401 - an ASGI message and scope
        if message.get("type") != "http.response.start":
            return
        present = {bytes(name).lower() for name, _ in message.get("headers", ())}
        message["headers"] = [*message.get("headers", ()), *((n, v) for n, v in raw if n not in present)]

    return hook
