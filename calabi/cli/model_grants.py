"""``calabi models grants|grant|revoke|set-owner|restrict|unrestrict``: who may use a model."""

from __future__ import annotations

from typing import Annotated

import typer

from calabi.cli import output as out
from calabi.cli.context import api
from calabi.cli.http import segment
from calabi.cli.options import JsonOpt

__all__ = ["grant", "grants", "restrict", "revoke", "set_owner", "unrestrict"]

_Group = Annotated[str | None, typer.Option("--group", help="A group (instead of --user).", show_default=False)]
_User = Annotated[str | None, typer.Option("--user", help="A user (instead of --group).", show_default=False)]


def _principal(user: str | None, group: str | None) -> tuple[str, str]:
    if (user is None) == (group is None):
        raise typer.BadParameter("name exactly one of --user and --group")
    return ("user", user) if user is not None else ("group", group or "")


def _show(permissions: out.Json, as_json: bool, message: str | None = None) -> None:
    out.show(permissions, as_json=as_json, message=message, view=None if message else out.grants_view(permissions))


def grants(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Show a model's owning group, whether it is restricted, and its grants."""
    _show(api(ctx).get(f"/models/{segment(name)}/grants"), as_json)


def grant(
    ctx: typer.Context,
    name: str,
    permission: Annotated[str, typer.Argument(help="READ, EDIT or MANAGE.")],
    user: _User = None,
    group: _Group = None,
    as_json: JsonOpt = False,
) -> None:
    """Give a user or a group READ, EDIT or MANAGE on a model (needs MANAGE)."""
    kind, principal = _principal(user, group)
    found = api(ctx).put(f"/models/{segment(name)}/grants",
                         {"principal_kind": kind, "principal": principal, "permission": permission})
    _show(found, as_json, f"Granted {permission.upper()} on '{found['name']}' to {kind} '{principal}'.")


def revoke(ctx: typer.Context, name: str, user: _User = None, group: _Group = None, as_json: JsonOpt = False) -> None:
    """Remove a user's or a group's grant on a model (needs MANAGE)."""
    kind, principal = _principal(user, group)
    found = api(ctx).delete(f"/models/{segment(name)}/grants", principal_kind=kind, principal=principal)
    _show(found, as_json, f"Revoked the grant of {kind} '{principal}' on '{found['name']}'.")


def set_owner(
    ctx: typer.Context,
    name: str,
    group: Annotated[str | None, typer.Argument(help="The owning group; leave out for no owner.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a group the owner of a model (its members MANAGE it; needs MANAGE)."""
    found = api(ctx).put(f"/models/{segment(name)}/owner", {"group": group})
    owner = f"group '{found['owner_group']}'" if found["owner_group"] else "no group"
    _show(found, as_json, f"'{found['name']}' is now owned by {owner}.")


def restrict(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Restrict a model to admins, its owning group and its grants; others no longer see it (needs MANAGE)."""
    found = api(ctx).put(f"/models/{segment(name)}/restricted", {"restricted": True})
    _show(found, as_json, f"'{found['name']}' is restricted.")


def unrestrict(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Lift a model's restriction: the roles' defaults apply again (needs MANAGE)."""
    found = api(ctx).put(f"/models/{segment(name)}/restricted", {"restricted": False})
    _show(found, as_json, f"'{found['name']}' is no longer restricted.")
