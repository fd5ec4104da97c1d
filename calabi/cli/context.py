"""How a ``calabi`` user command reaches the server: the global ``--url``/``--token`` and one API client.

The root callback stores a :class:`Runtime`; :func:`api` gives the command an
:class:`~calabi.cli.http.ApiClient` for the URL and the caller's token (``--token``, else
``CALABI_TOKEN``, else the token ``calabi login URL`` saved for that URL).
"""

from __future__ import annotations

from dataclasses import dataclass

import typer

from calabi.cli.credentials import saved_token
from calabi.cli.http import ApiClient, ApiError, normalise_url

__all__ = ["Runtime", "api"]


@dataclass
class Runtime:
    """Global options, and the API client once a command needs it."""

    url: str
    token: str | None
    client: ApiClient | None = None


def api(ctx: typer.Context) -> ApiClient:
    """The API client of this invocation (closed when the command ends)."""
    runtime = ctx.find_object(Runtime)
    assert runtime is not None, "the root callback sets the runtime"
    if runtime.client is None:
        url = normalise_url(runtime.url)
        token = runtime.token or saved_token(url)
        if not token:
            raise ApiError("UNAUTHENTICATED", f"no token for {url}: pass --token, set CALABI_TOKEN, "
                                              f"or run 'calabi login {url}'")
        runtime.client = ApiClient(url, token)
        ctx.find_root().call_on_close(runtime.client.close)
    return runtime.client
