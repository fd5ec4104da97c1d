"""``calabi models``: registered models."""

from __future__ import annotations

from typing import Annotated

import typer

from calabi.cli import output as out
from calabi.cli.context import api
from calabi.cli.http import segment
from calabi.cli.options import JsonOpt, TagOpt, YesOpt, parse_tags

__all__ = ["models_app"]

models_app = typer.Typer(no_args_is_help=True, help="Registered models.")


@models_app.command("list")
def models_list(
    ctx: typer.Context,
    filter_string: Annotated[
        str | None, typer.Option("--filter", help="MLflow filter, e.g. \"name LIKE 'churn%'\".")
    ] = None,
    max_results: Annotated[int, typer.Option(help="At most this many models.")] = 100,
    page_token: Annotated[str | None, typer.Option(help="Continue a previous listing.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List registered models."""
    page = api(ctx).get("/models", filter=filter_string, max_results=max_results, page_token=page_token)
    out.show(page["models"], as_json=as_json, view=out.models_table(page["models"]))
    if page.get("next_page_token"):
        typer.echo(f"more models match: continue with --page-token {page['next_page_token']}", err=True)


@models_app.command("create")
def models_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    description: Annotated[str | None, typer.Option(help="Description.")] = None,
    tag: TagOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an empty registered model."""
    tags = parse_tags(tag)
    model = api(ctx).post("/models", {"name": name, "description": description, "tags": tags})
    out.show(model, as_json=as_json, message=f"Created registered model '{model['name']}'.")


@models_app.command("show")
def models_show(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Show a model with its tags, aliases and latest version per stage."""
    model = api(ctx).get(f"/models/{segment(name)}")
    out.show(model, as_json=as_json, view=out.model_detail(model))


@models_app.command("history")
def models_history(
    ctx: typer.Context,
    name: str,
    at: Annotated[
        str | None, typer.Option(help="Only the version that was Production at this instant (epoch ms or ISO-8601).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Which version was Production when, who moved it there and why (newest first)."""
    found = api(ctx).get(f"/models/{segment(name)}/production-history", at=at)
    if as_json:
        out.emit_json(found)
    elif at is not None and found["version"] is None:
        typer.echo(f"No version of '{found['name']}' was in Production at {out.timestamp(found['at'])}.")
    else:
        out.print_rich(out.production_table(found["name"], found["stints"] if at is None else [found["stint"]]))


@models_app.command("describe")
def models_describe(ctx: typer.Context, name: str, text: str, as_json: JsonOpt = False) -> None:
    """Replace a model's description."""
    model = api(ctx).patch(f"/models/{segment(name)}", {"description": text})
    out.show(model, as_json=as_json, message=f"Updated the description of '{model['name']}'.")


@models_app.command("rename")
def models_rename(ctx: typer.Context, name: str, new_name: str, as_json: JsonOpt = False) -> None:
    """Rename a model; its versions, tags and aliases follow."""
    model = api(ctx).patch(f"/models/{segment(name)}", {"new_name": new_name})
    out.show(model, as_json=as_json, message=f"Renamed '{name}' to '{model['name']}'.")


@models_app.command("set-tier")
def models_set_tier(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    tier: Annotated[str | None, typer.Argument(help="A risk tier the policy declares, e.g. high.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the model's risk tier.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Set a model's risk tier (MANAGE on it), selecting the policy's [tiers.<tier>] overlay; --clear removes it."""
    if (tier is None) == (not clear):
        raise typer.BadParameter("give a TIER or --clear, not both", param_hint="'TIER'")
    model = api(ctx).put(f"/models/{segment(name)}/risk-tier", {"tier": tier})
    done = f"Risk tier of '{model['name']}' is now {model['risk_tier']}." if model["risk_tier"] else \
        f"Cleared the risk tier of '{model['name']}'."
    out.show(model, as_json=as_json, message=done)


@models_app.command("delete")
def models_delete(ctx: typer.Context, name: str, yes: YesOpt = False) -> None:
    """Delete a model with all its versions and their artifacts."""
    client = api(ctx)
    if not yes:  # a missing model fails before the prompt
        client.get(f"/models/{segment(name)}")
        typer.confirm(f"Delete registered model '{name}' with all its versions and artifacts?", abort=True, err=True)
    client.delete(f"/models/{segment(name)}")
    typer.echo(f"Deleted registered model '{name}'.")
