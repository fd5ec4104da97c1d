"""``calabi groups``: groups of users (teams) and their members (admin)."""

from __future__ import annotations

from typing import Annotated

import typer

from calabi.cli import output as out
from calabi.cli.context import api
from calabi.cli.http import segment
from calabi.cli.options import JsonOpt, YesOpt

__all__ = ["groups_app"]

groups_app = typer.Typer(no_args_is_help=True, help="Groups of users (teams) and their members (admin).")


def _members(group: out.Json) -> str:
    return f"Group '{group['name']}': {', '.join(group['members']) or 'no members'}."


@groups_app.command("list")
def groups_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List groups and their members."""
    groups = api(ctx).get("/groups")
    out.show(groups, as_json=as_json, view=out.groups_table(groups))


@groups_app.command("create")
def groups_create(
    ctx: typer.Context,
    name: str,
    description: Annotated[str, typer.Option(help="What the group is.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Create a group."""
    group = api(ctx).post("/groups", {"name": name, "description": description})
    out.show(group, as_json=as_json, message=f"Created group '{group['name']}'.")


@groups_app.command("show")
def groups_show(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Show a group and its members."""
    group = api(ctx).get(f"/groups/{segment(name)}")
    out.show(group, as_json=as_json, view=out.groups_table([group]))


@groups_app.command("delete")
def groups_delete(ctx: typer.Context, name: str, yes: YesOpt = False) -> None:
    """Delete a group, its memberships and its grants; the models it owned keep no owner."""
    client = api(ctx)
    if not yes:  # a missing group fails before the prompt
        client.get(f"/groups/{segment(name)}")
        typer.confirm(f"Delete group '{name}' with its memberships and grants?", abort=True, err=True)
    client.delete(f"/groups/{segment(name)}")
    typer.echo(f"Deleted group '{name}'.")


@groups_app.command("add-member")
def groups_add_member(ctx: typer.Context, group: str, user: str, as_json: JsonOpt = False) -> None:
    """Add a user to a group."""
    found = api(ctx).put(f"/groups/{segment(group)}/members/{segment(user)}", {})
    out.show(found, as_json=as_json, message=_members(found))


@groups_app.command("remove-member")
def groups_remove_member(ctx: typer.Context, group: str, user: str, as_json: JsonOpt = False) -> None:
    """Remove a user from a group."""
    found = api(ctx).delete(f"/groups/{segment(group)}/members/{segment(user)}")
    out.show(found, as_json=as_json, message=_members(found))
