"""``calabi users``: users, roles and tokens (admin)."""

from __future__ import annotations

from typing import Annotated

import typer

from calabi.cli import output as out
from calabi.cli.context import api
from calabi.cli.http import segment
from calabi.cli.options import JsonOpt

__all__ = ["users_app"]

users_app = typer.Typer(no_args_is_help=True, help="Users, roles and tokens (admin).")


@users_app.command("add")
def users_add(
    ctx: typer.Context,
    name: str,
    role: Annotated[
        list[str] | None,
        typer.Option("--role", help="viewer, engineer, approver or admin (repeatable).", show_default=False),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a user and print its token (shown once)."""
    created = api(ctx).post("/users", {"name": name, "roles": role or []})
    if as_json:
        out.emit_json(created)
        return
    user = created["user"]
    typer.echo(f"Created user '{user['name']}' (roles: {', '.join(user['roles'])}).")
    typer.echo(f"Token (shown once, store it now): {created['token']}")


@users_app.command("list")
def users_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List users and their roles."""
    users = api(ctx).get("/users")
    out.show(users, as_json=as_json, view=out.users_table(users))


@users_app.command("set-primary-group")
def users_set_primary_group(
    ctx: typer.Context,
    name: str,
    group: Annotated[str | None, typer.Argument(help="The group; leave out to clear it.")] = None,
) -> None:
    """Set the group that owns the models the user creates (the user joins it)."""
    api(ctx).put(f"/users/{segment(name)}/primary-group", {"group": group})
    typer.echo(f"Primary group of '{name}': {group if group else 'none'}.")
