"""The CLI's HTTP client for Calabi's ``/api/v1``: a base URL, a bearer token and one error type.

Every failure becomes an :class:`ApiError` carrying the server's ``error_code`` and ``message``
(or a client-side code when the server cannot be reached), which the root command prints as
one line. Only ``httpx`` is needed: the CLI's user commands import no registry code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

__all__ = ["DEFAULT_URL", "ApiClient", "ApiError", "normalise_url", "segment"]

DEFAULT_URL = "http://127.0.0.1:8080"
_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
_UPLOAD_TIMEOUT = httpx.Timeout(None, connect=10.0)  # a large upload, then the server's copy: no read deadline


class ApiError(Exception):
    """A failed API call: the server's MLflow-style ``error_code`` and ``message``."""

    def __init__(self, error_code: str, message: str, *, status: int = 0) -> None:
        super().__init__(f"{error_code}: {message}")
        self.error_code = error_code
        self.message = message
        self.status = status


def normalise_url(url: str) -> str:
    """The server's base URL without a trailing slash; refuses what is not an http(s) URL."""
    base = url.strip().rstrip("/")
    try:
        parsed = httpx.URL(base)
    except httpx.InvalidURL as exc:
        raise ApiError("INVALID_PARAMETER_VALUE", f"invalid server URL {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ApiError("INVALID_PARAMETER_VALUE", f"server URL must be http://HOST[:PORT] or https://…, got {url!r}")
    return base


def segment(value: object) -> str:
    """One URL path segment (a model name, a version, a key), percent-encoded."""
    return quote(str(value), safe="")


class ApiClient:
    """Calls ``/api/v1`` routes of one server with one token; JSON in, JSON out."""

    def __init__(self, url: str, token: str | None, *, transport: httpx.BaseTransport | None = None) -> None:
        self.url = normalise_url(url)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=_TIMEOUT, transport=transport)

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

    def get(self, path: str, **params: Any) -> Any:
        """``GET /api/v1<path>`` with query ``params`` (None values left out)."""
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """``POST /api/v1<path>`` with a JSON body."""
        return self.request("POST", path, body=body)

    def put(self, path: str, body: Mapping[str, Any]) -> Any:
        """``PUT /api/v1<path>`` with a JSON body."""
        return self.request("PUT", path, body=body)

    def patch(self, path: str, body: Mapping[str, Any]) -> Any:
        """``PATCH /api/v1<path>`` with a JSON body."""
        return self.request("PATCH", path, body=body)

    def delete(self, path: str, **params: Any) -> Any:
        """``DELETE /api/v1<path>`` with query ``params`` (None values left out)."""
        return self.request("DELETE", path, params=params)

    def upload(self, path: str, chunks: Iterable[bytes], *, content_type: str, **params: Any) -> Any:
        """``POST /api/v1<path>`` streaming ``chunks`` as the body (chunked transfer encoding)."""
        return self.request("POST", path, params=params, content=chunks, timeout=_UPLOAD_TIMEOUT,
                            headers={"Content-Type": content_type})

    def request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None, content: Iterable[bytes] | None = None,
        timeout: httpx.Timeout | None = None, headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one request; the decoded JSON reply (None for an empty one), or raise :class:`ApiError`."""
        query = {key: value for key, value in (params or {}).items() if value is not None}
        try:
            response = self._http.request(
                method, f"/api/v1{path}", params=query, json=body, content=content, headers=headers,
                timeout=timeout if timeout is not None else _TIMEOUT,
            )
        except httpx.TimeoutException as exc:
            raise ApiError("TEMPORARILY_UNAVAILABLE", f"the Calabi server at {self.url} did not answer in time "
                                                      f"({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise ApiError("TEMPORARILY_UNAVAILABLE", f"cannot reach the Calabi server at {self.url}: "
                                                      f"{exc or type(exc).__name__} (set --url or CALABI_URL)") from exc
        if response.status_code >= 400:
            raise _error(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError("INTERNAL_ERROR", f"{self.url} answered {method} {path} with something other than JSON; "
                                             "is it a Calabi server?") from exc


def _error(response: httpx.Response) -> ApiError:
    """The server's ``{"error_code", "message"}``, or the status line when the reply is not one."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error_code"), str):
        return ApiError(body["error_code"], str(body.get("message", "")), status=response.status_code)
    text = " ".join(response.text.split())[:200]
    return ApiError(f"HTTP_{response.status_code}", f"{response.request.method} {response.request.url.path}: "
                    f"{response.reason_phrase}" + (f" ({text})" if text else ""), status=response.status_code)
