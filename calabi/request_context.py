"""The request being answered (id, route template, actor), for log records written while it runs."""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass

__all__ = ["REQUEST_ID_KEY", "ROUTE_KEY", "RequestContext", "current_request", "end_request", "start_request"]

REQUEST_ID_KEY = "calabi.request_id"
"""The ASGI scope key of the request's id (picked once per request)."""
ROUTE_KEY = "calabi.route"
"""The ASGI scope key a handler answering outside FastAPI's router sets to its route template (the MLflow routes)."""


@dataclass
class RequestContext:
    """Mutable on purpose: the route and the actor are learnt while the request runs (in copied contexts)."""

    request_id: str
    route: str = ""
    actor: str = ""


_CURRENT: ContextVar[RequestContext | None] = ContextVar("calabi_request", default=None)


def start_request(request_id: str) -> tuple[RequestContext, Token[RequestContext | None]]:
    """Make a new request the current one; the token ends it (``end_request``)."""
    context = RequestContext(request_id)
    return context, _CURRENT.set(context)


def end_request(token: Token[RequestContext | None]) -> None:
    """Restore what was current before ``start_request``."""
    _CURRENT.reset(token)


def current_request() -> RequestContext | None:
    """The request this code runs for, if any."""
    return _CURRENT.get()
