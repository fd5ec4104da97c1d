"""``calabi tokens``: your own API tokens (list, create with an expiry, revoke)."""

from __future__ import annotations

from typing import Annotated

import typer

from calabi.cli import output as out
from calabi.cli.context import api
from calabi.cli.options import JsonOpt

__all__ = ["tokens_app"]

tokens_app = typer.Typer(no_args_is_help=True, help="Your own API tokens: list, create, revoke.")


@tokens_app.command("list")
def tokens_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List your tokens (revoked and expired ones too), newest first."""
    tokens = api(ctx).get("/tokens")
    out.show(tokens, as_json=as_json, view=out.tokens_table(tokens))


@tokens_app.command("create")
def tokens_create(
    ctx: typer.Context,
    name: str,
    days: Annotated[int, typer.Option("--days", help="Days until it expires (1-365).")] = 90,
    as_json: JsonOpt = False,
) -> None:
    """Create a token and print it (shown once)."""
    created = api(ctx).post("/tokens", {"name": name, "expires_in_days": days})
    if as_json:
        out.emit_json(created)
        return
    token = created["token"]
    typer.echo(f"Created token '{token['name']}' (id {token['id']}, expires {out.timestamp(token['expires_at'])}).")
    typer.echo(f"Token (shown once, store it now): {created['secret']}")


@tokens_app.command("revoke")
def tokens_revoke(ctx: typer.Context, token_id: int, as_json: JsonOpt = False) -> None:
    """Revoke one of your tokens by its id (see 'calabi tokens list')."""
    revoked = api(ctx).delete(f"/tokens/{token_id}")
    if as_json:
        out.emit_json(revoked)
        return
    typer.echo(f"Revoked token '{revoked['name']}' (id {revoked['id']}).")
