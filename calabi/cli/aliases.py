"""``calabi aliases``: aliases naming a model version."""

from __future__ import annotations

import typer

from calabi.cli import output as out
from calabi.cli.context import api
from calabi.cli.http import segment
from calabi.cli.options import JsonOpt

__all__ = ["aliases_app"]

aliases_app = typer.Typer(no_args_is_help=True, help="Aliases naming a model version.")


@aliases_app.command("set")
def aliases_set(ctx: typer.Context, model: str, alias: str, version: str) -> None:
    """Point an alias at a version."""
    api(ctx).put(f"/models/{segment(model)}/aliases/{segment(alias)}", {"version": version})
    typer.echo(f"Alias '{alias}' of '{model}' now names version {version}.")


@aliases_app.command("delete")
def aliases_delete(ctx: typer.Context, model: str, alias: str) -> None:
    """Remove an alias (a missing alias is not an error)."""
    api(ctx).delete(f"/models/{segment(model)}/aliases/{segment(alias)}")
    typer.echo(f"Alias '{alias}' of '{model}' removed.")


@aliases_app.command("show")
def aliases_show(ctx: typer.Context, model: str, alias: str, as_json: JsonOpt = False) -> None:
    """Show the version an alias names ('latest' names the newest version)."""
    found = api(ctx).get(f"/models/{segment(model)}/aliases/{segment(alias)}")
    out.show(found, as_json=as_json, view=out.version_detail(found))
