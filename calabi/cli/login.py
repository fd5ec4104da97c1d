"""``calabi login URL``: check a token against a server and save it for later commands."""

from __future__ import annotations

from typing import Annotated

import typer

from calabi.cli.credentials import save_token
from calabi.cli.http import ApiClient, normalise_url

__all__ = ["login"]


def login(
    url: Annotated[str, typer.Argument(help="The server, e.g. https://calabi.example.com.", show_default=False)],
    token: Annotated[
        str | None, typer.Option("--token", help="The token (else asked for, without echo).", show_default=False)
    ] = None,
) -> None:
    """Verify a token with the server (GET /api/v1/me) and save it for URL (file mode 0600)."""
    base = normalise_url(url)
    secret = token or typer.prompt(f"Token for {base}", hide_input=True, err=True).strip()
    client = ApiClient(base, secret)
    try:
        me = client.get("/me")
    finally:
        client.close()
    path = save_token(base, secret)
    typer.echo(f"Logged in to {base} as '{me['name']}' (roles: {', '.join(me['roles']) or 'none'}); "
               f"token saved in {path}.")
