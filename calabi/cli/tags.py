"""``calabi tags``: tags on models and versions."""

from __future__ import annotations

from typing import Annotated

import typer

from calabi.cli.context import api
from calabi.cli.http import segment

__all__ = ["tags_app"]

tags_app = typer.Typer(no_args_is_help=True, help="Tags on models and versions.")

VersionOpt = Annotated[str | None, typer.Option("--version", help="Tag this version instead of the model.")]


def _path(model: str, version: str | None, key: str) -> str:
    on_version = f"/versions/{segment(version)}" if version is not None else ""
    return f"/models/{segment(model)}{on_version}/tags/{segment(key)}"


def _subject(model: str, version: str | None) -> str:
    return f"'{model}'" + (f" version {version}" if version is not None else "")


@tags_app.command("set")
def tags_set(ctx: typer.Context, model: str, key: str, value: str, version: VersionOpt = None) -> None:
    """Set a tag on a model, or on one of its versions with --version."""
    api(ctx).put(_path(model, version, key), {"value": value})
    typer.echo(f"Tag '{key}' set on {_subject(model, version)}.")


@tags_app.command("delete")
def tags_delete(ctx: typer.Context, model: str, key: str, version: VersionOpt = None) -> None:
    """Delete a tag from a model, or from one of its versions with --version."""
    api(ctx).delete(_path(model, version, key))
    typer.echo(f"Tag '{key}' removed from {_subject(model, version)}.")
