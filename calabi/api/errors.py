"""The one place where errors become HTTP responses: MLflow's ``{"error_code", "message"}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from registry_store.errors import RateLimitedError, RegistryError

__all__ = ["error_response", "install_error_handlers", "registry_error_response", "unstorable_text_response"]

log = logging.getLogger(__name__)
_STATUS_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "ENDPOINT_NOT_FOUND",
    405: "ENDPOINT_NOT_FOUND",
    413: "INVALID_PARAMETER_VALUE",
    422: "INVALID_PARAMETER_VALUE",
}


def error_response(status: int, error_code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An MLflow-shaped error body."""
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="calabi"', **(headers or {})}
    return JSONResponse({"error_code": error_code, "message": message}, status_code=status, headers=headers)


def registry_error_response(exc: RegistryError) -> JSONResponse:
    """A domain error with its MLflow code and status (and ``Retry-After`` when rate-limited)."""
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, RateLimitedError) else None
    return error_response(exc.http_status, exc.error_code, exc.message, headers)


def unstorable_text_response(exc: UnicodeEncodeError) -> JSONResponse:
    """Text that cannot be stored (a lone surrogate) is bad input."""
    return error_response(400, "INVALID_PARAMETER_VALUE", f"Request text is not valid Unicode: {exc}")


async def _registry_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RegistryError)
    return registry_error_response(exc)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err.get('loc', ())[1:]) or 'body'}: {err.get('msg', '')}"
        for err in exc.errors()
    )
    return error_response(400, "INVALID_PARAMETER_VALUE", f"Invalid request: {problems}")


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "INTERNAL_ERROR" if exc.status_code >= 500 else "BAD_REQUEST")
    return error_response(exc.status_code, code, str(exc.detail))


async def _unstorable_text(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UnicodeEncodeError)
    return unstorable_text_response(exc)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "INTERNAL_ERROR", "Internal error; the server log has the details.")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers; Starlette's MRO lookup covers every RegistryError subclass."""
    app.add_exception_handler(RegistryError, _registry_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(UnicodeEncodeError, _unstorable_text)
    app.add_exception_handler(Exception, _unexpected)
