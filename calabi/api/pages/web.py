"""What every page shares: templates, the signed-in user, CSRF-checked forms, HTML errors and redirects.

Pages are thin adapters: they call the services and render what comes back. Errors become
HTML pages here (the API keeps its MLflow-shaped JSON errors in ``api/errors.py``).
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from markupsafe import escape
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from calabi.api.deps import request_id
from calabi.api.pages.templating import templates
from calabi.bootstrap import Services, now_ms
from registry_store.audit import Actor
from registry_store.errors import PermissionDeniedError, RegistryError, UnauthenticatedError
from registry_store.sessions import WebSessionStore

__all__ = [
    "COOKIE_PATH",
    "FLASH_COOKIE",
    "SESSION_COOKIE",
    "SIGN_IN_COOKIE",
    "Form",
    "PageRoute",
    "PageUser",
    "PostedForm",
    "SignedIn",
    "error_page",
    "is_https",
    "page_services",
    "read_form",
    "render",
    "safe_next",
    "see_other",
    "session_store",
    "signed_in",
]

log = logging.getLogger(__name__)

SESSION_COOKIE = "calabi_session"
SIGN_IN_COOKIE = "calabi_sign_in"
FLASH_COOKIE = "calabi_flash"
COOKIE_PATH = "/ui"
MAX_FORM_BYTES = 512 * 1024
MAX_FORM_FIELDS = 200
_ROLE_NEEDED = re.compile(r"the '([\w-]+)' role is required")
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


# ------------------------------------------------------------------------------ the signed-in user


@dataclass(frozen=True)
class PageUser:
    """The signed-in user of a page: the actor (current roles), the session's CSRF token and cookie."""

    actor: Actor
    csrf_token: str
    session_id: str

    @property
    def name(self) -> str:
        """The user's name."""
        return self.actor.name

    def has(self, role: str) -> bool:
        """Whether the user holds ``role`` (directly or implied); only decides which buttons to show."""
        return role in self.actor.roles


class SignInRequired(Exception):
    """No valid session: the page redirects to the sign-in page."""


def page_services(request: Request) -> Services:
    """The services built at start-up."""
    services: Services = request.app.state.services
    return services


def session_store(request: Request) -> WebSessionStore:
    """The session store over the app's database (built on first use)."""
    store: WebSessionStore | None = getattr(request.app.state, "web_sessions", None)
    if store is None:
        store = WebSessionStore(page_services(request).db, clock=now_ms)
        request.app.state.web_sessions = store
    return store


async def signed_in(request: Request) -> PageUser:
    """The signed-in user, or a redirect to the sign-in page."""
    session_id = request.cookies.get(SESSION_COOKIE)
    found = await run_in_threadpool(session_store(request).resolve, session_id, request_id=request_id(request))
    if found is None or session_id is None:
        raise SignInRequired()
    user = PageUser(actor=found.actor, csrf_token=found.csrf_token, session_id=session_id)
    request.state.page_user = user
    return user


SignedIn = Annotated[PageUser, Depends(signed_in)]


# ------------------------------------------------------------------------------ forms and CSRF


class Form:
    """The fields of an ``application/x-www-form-urlencoded`` body (no file uploads on these pages)."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._pairs = list(pairs)

    def get(self, name: str, default: str = "") -> str:
        """The first value of a field (``default`` when absent)."""
        return next((v for k, v in self._pairs if k == name), default)

    def optional(self, name: str) -> str | None:
        """The value with surrounding whitespace removed, or None when it is empty or absent."""
        value = self.get(name).strip()
        return value or None

    def flag(self, name: str) -> bool:
        """Whether a checkbox was ticked."""
        return any(k == name for k, _ in self._pairs)


async def read_form(request: Request) -> Form:
    """Parse a URL-encoded form body (bounded); an empty body is an empty form."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise StarletteHTTPException(413, "The form is too large.")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded" and (body or content_type):
        raise StarletteHTTPException(415, "Forms must be sent as application/x-www-form-urlencoded.")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise StarletteHTTPException(400, f"The form could not be read: {exc}") from exc
    return Form(pairs)


class CsrfRefused(Exception):
    """A form arrived without the session's CSRF token (or with a wrong one)."""


async def posted_form(request: Request, user: SignedIn) -> Form:
    """The posted form, once its CSRF token matches the session's (constant-time comparison)."""
    form = await read_form(request)
    if not hmac.compare_digest(form.get("csrf_token").encode(), user.csrf_token.encode()):
        raise CsrfRefused()
    return form


PostedForm = Annotated[Form, Depends(posted_form)]


# ------------------------------------------------------------------------------ responses


def is_https(request: Request) -> bool:
    """Whether the browser reached us over https (uvicorn honours X-Forwarded-Proto from trusted proxies)."""
    return request.url.scheme == "https"


def _secure(response: Response) -> Response:
    for key, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    return response


def render(
    request: Request, template: str, *, user: PageUser | None = None, status: int = 200, **context: Any
) -> HTMLResponse:
    """Render a page (autoescaped) with the layout's context: user, CSRF token, flash message."""
    flash = unquote(request.cookies.get(FLASH_COOKIE, ""))[:500]
    context.setdefault("nav", "")
    html = templates.get_template(template).render(
        request=request, user=user, csrf_token=user.csrf_token if user else "", flash=flash,
        services=page_services(request), **context,
    )
    response = HTMLResponse(html, status_code=status)
    if flash:
        response.delete_cookie(FLASH_COOKIE, path=COOKIE_PATH)
    _secure(response)
    return response


def see_other(request: Request, url: str, *, flash: str | None = None) -> RedirectResponse:
    """A 303 redirect after a POST, optionally with a one-time message for the next page."""
    response = RedirectResponse(url, status_code=303)
    if flash:
        response.set_cookie(FLASH_COOKIE, quote(flash[:500]), max_age=120, path=COOKIE_PATH, httponly=True,
                            samesite="lax", secure=is_https(request))
    _secure(response)
    return response


def safe_next(value: str | None) -> str:
    """A local page to go to after signing in (anything else goes to the models list)."""
    if value and value.startswith("/ui/") and not value.startswith("//") and "\\" not in value \
            and not value.startswith("/ui/sign-in") and not value.startswith("/ui/static"):
        return value
    return "/ui/models"


def error_page(request: Request, status: int, message: str, *, title: str | None = None) -> HTMLResponse:
    """The HTML error page: 404, 403 (naming the role needed), 400, 409, 503..."""
    user: PageUser | None = getattr(request.state, "page_user", None)
    match = _ROLE_NEEDED.search(message) if status == 403 else None
    titles = {400: "That did not work", 401: "Please sign in", 403: "Not allowed", 404: "Not found",
              409: "Conflict", 413: "Too large", 415: "Unsupported form", 503: "Temporarily unavailable"}
    try:
        return render(
            request, "error.html", user=user, status=status, code=status,
            title=title or titles.get(status, "Something went wrong"), message=message,
            role_needed=match.group(1) if match else None,
            back=request.headers.get("referer") if _same_origin(request) else None,
        )
    except Exception:  # never let the error page itself fail
        log.exception("could not render the error page for %s", request.url.path)
        text = escape(message)
        return HTMLResponse(f"<!doctype html><title>Error {status}</title><h1>Error {status}</h1><p>{text}</p>",
                            status_code=status)


def _same_origin(request: Request) -> bool:
    referer = request.headers.get("referer", "")
    return referer.startswith(str(request.base_url).rstrip("/") + "/ui/")


def sign_in_redirect(request: Request) -> RedirectResponse:
    """Send the browser to the sign-in page, coming back here (GET) afterwards."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        target = request.headers.get("referer", "").removeprefix(str(request.base_url).rstrip("/")) or "/ui/models"
    response = RedirectResponse(f"/ui/sign-in?{urlencode({'next': safe_next(target)})}", status_code=303)
    if request.cookies.get(SESSION_COOKIE):
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    _secure(response)
    return response


class PageRoute(APIRoute):
    """A route whose errors are HTML pages: a sign-in redirect, 403 with the role needed, 404, ..."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return _secure(await handler(request))
            except (SignInRequired, UnauthenticatedError):
                return sign_in_redirect(request)
            except CsrfRefused:
                return error_page(
                    request, 403, "The form's security token is missing or out of date, so nothing was changed. "
                    "Reload the page and try again.", title="Form refused",
                )
            except PermissionDeniedError as exc:
                return error_page(request, 403, exc.message)
            except RegistryError as exc:
                return error_page(request, exc.http_status, exc.message)
            except RequestValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in err.get('loc', ())[1:]) or 'request'}: {err.get('msg', '')}"
                    for err in exc.errors()
                )
                return error_page(request, 400, f"Invalid request: {problems}")
            except StarletteHTTPException as exc:
                return error_page(request, exc.status_code, str(exc.detail))
            except Exception:
                log.exception("unhandled error on page %s %s", request.method, request.url.path)
                return error_page(request, 500, "Internal error; the server log has the details.")

        return page_handler
