"""``calabi versions``: model versions; ``register`` uploads local files or names a server-side source."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import typer

from calabi.cli import output as out
from calabi.cli.context import api
from calabi.cli.http import ApiClient, segment
from calabi.cli.options import JsonOpt, TagOpt, YesOpt, parse_tags
from calabi.cli.upload import local_tree, tar_chunks

__all__ = ["versions_app"]

versions_app = typer.Typer(no_args_is_help=True, help="Model versions.")

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
TAR = "application/x-tar"


@versions_app.command("register")
def versions_register(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    source: Annotated[str, typer.Argument(help=(
        "A file or directory on this machine (uploaded), or a source the server reads: "
        "s3://…, runs:/…, models:/m-…, mlflow-artifacts:/… or file://… below the server's allowed roots."
    ))],
    run_id: Annotated[str | None, typer.Option(help="The run that produced the artifact.")] = None,
    description: Annotated[str | None, typer.Option(help="Description.")] = None,
    tag: TagOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Copy an artifact into the registry as the model's next version."""
    tags = parse_tags(tag)
    client = api(ctx)
    if _URI.match(source):
        version = client.post(f"/models/{segment(model)}/versions",
                              {"source": source, "run_id": run_id, "description": description, "tags": tags})
    else:
        version = _upload(client, model, source, run_id=run_id, description=description, tags=tags)
    out.show(version, as_json=as_json,
             message=f"Registered '{version['name']}' version {version['version']} (digest {version['digest']}).")


def _upload(client: ApiClient, model: str, path: str, *, run_id: str | None, description: str | None,
            tags: dict[str, str]) -> Any:
    """Stream the local ``path`` to the upload route with a progress bar."""
    tree = local_tree(path)
    with out.upload_progress(f"Uploading {model}", tree.size) as progress:
        return client.upload(
            f"/models/{segment(model)}/versions/upload", tar_chunks(tree, progress), content_type=TAR,
            filename=tree.name, run_id=run_id, description=description, tags=json.dumps(tags) if tags else None,
        )


@versions_app.command("list")
def versions_list(ctx: typer.Context, model: str, as_json: JsonOpt = False) -> None:
    """List a model's versions, newest first."""
    client = api(ctx)
    versions: list[Any] = []
    page_token: str | None = None
    while True:
        page = client.get(f"/models/{segment(model)}/versions", page_token=page_token)
        versions.extend(page["versions"])
        page_token = page.get("next_page_token")
        if not page_token:
            break
    out.show(versions, as_json=as_json, view=out.versions_table(versions))


@versions_app.command("show")
def versions_show(ctx: typer.Context, model: str, version: str, as_json: JsonOpt = False) -> None:
    """Show one version."""
    found = api(ctx).get(f"/models/{segment(model)}/versions/{segment(version)}")
    out.show(found, as_json=as_json, view=out.version_detail(found))


@versions_app.command("transition")
def versions_transition(
    ctx: typer.Context,
    model: str,
    version: str,
    stage: Annotated[str, typer.Argument(help="None, Staging, Production or Archived.")],
    archive_existing: Annotated[
        bool, typer.Option(help="Archive the other versions in the target stage.")
    ] = False,
    reason: Annotated[str, typer.Option(help="Why (recorded with an admin's break-glass move and its review).")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Move a version to another stage (an admin's move into Production opens a post-implementation review)."""
    moved = api(ctx).post(f"/models/{segment(model)}/versions/{segment(version)}/stage",
                          {"stage": stage, "archive_existing_versions": archive_existing, "reason": reason})
    out.show(moved, as_json=as_json,
             message=f"'{moved['name']}' version {moved['version']} is now in {moved['current_stage']}.")


@versions_app.command("describe")
def versions_describe(
    ctx: typer.Context, model: str, version: str, text: str, as_json: JsonOpt = False
) -> None:
    """Replace a version's description."""
    updated = api(ctx).patch(f"/models/{segment(model)}/versions/{segment(version)}", {"description": text})
    out.show(updated, as_json=as_json,
             message=f"Updated the description of '{updated['name']}' version {updated['version']}.")


@versions_app.command("delete")
def versions_delete(ctx: typer.Context, model: str, version: str, yes: YesOpt = False) -> None:
    """Delete a version and its artifact (its number is never reused)."""
    client = api(ctx)
    path = f"/models/{segment(model)}/versions/{segment(version)}"
    if not yes:
        client.get(path)
        typer.confirm(f"Delete '{model}' version {version} and its artifact?", abort=True, err=True)
    client.delete(path)
    typer.echo(f"Deleted '{model}' version {version}.")
