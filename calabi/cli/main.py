"""``calabi``: the command line. Each command is a thin adapter over the services.

Every registry command authenticates the caller with a token (``--token``, else
``CALABI_TOKEN``, else ``<data-dir>/admin-token`` for the operator on the server's
machine), so the audit log names the token's user. Failures print one line,
``error: CODE: message``, on stderr and exit non-zero.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from calabi.cli import output as out
from calabi.cli.context import Runtime
from calabi.cli.context import connect as _connect
from calabi.cli.promotions import (
    cancel,
    promote,
    promotions_app,
    recheck,
    reject,
    rollback,
    serving_schema_app,
    sign_off,
)
from calabi.cli.serve import serve, worker
from registry_store.entities import ModelVersion
from registry_store.errors import RegistryError

__all__ = ["app", "main"]


app = typer.Typer(
    cls=out.OneLineErrorsGroup, no_args_is_help=True, add_completion=False,
    help="Calabi model registry. Global options go before the command: calabi --token T models list",
)
models_app = typer.Typer(no_args_is_help=True, help="Registered models.")
versions_app = typer.Typer(no_args_is_help=True, help="Model versions.")
aliases_app = typer.Typer(no_args_is_help=True, help="Aliases naming a model version.")
tags_app = typer.Typer(no_args_is_help=True, help="Tags on models and versions.")
audit_app = typer.Typer(no_args_is_help=True, help="The hash-chained audit log.")
users_app = typer.Typer(no_args_is_help=True, help="Users, roles and tokens (admin).")
for _sub, _name in ((models_app, "models"), (versions_app, "versions"), (aliases_app, "aliases"),
                    (tags_app, "tags"), (audit_app, "audit"), (users_app, "users")):
    app.add_typer(_sub, name=_name)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
TagOpt = Annotated[list[str] | None, typer.Option("--tag", help="A tag KEY=VALUE (repeatable).", show_default=False)]
VersionOpt = Annotated[str | None, typer.Option("--version", help="Tag this version instead of the model.")]


@app.callback()
def _root(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (default: CALABI_DATA_DIR, else ./calabi-data).")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="API token (default: CALABI_TOKEN, else <data-dir>/admin-token).", show_default=False),
    ] = None,
) -> None:
    """Calabi model registry. Registry commands act on the database of the configured data dir."""
    ctx.obj = Runtime(data_dir=data_dir, token=token)


def _tags(values: list[str] | None) -> list[tuple[object, object]]:
    tags: list[tuple[object, object]] = []
    for value in values or []:
        key, sep, tag_value = value.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint="'--tag'")
        tags.append((key, tag_value))
    return tags


def _done(message: str) -> None:
    typer.echo(message)


# --------------------------------------------------------------------------- serve


app.command()(serve)
app.command()(worker)

# --------------------------------------------------------------------------- promotions (calabi.cli.promotions)

app.command("promote")(promote)
app.add_typer(promotions_app, name="promotions")
app.command("sign-off")(sign_off)
app.command("reject")(reject)
app.command("cancel")(cancel)
app.command("recheck")(recheck)
app.command("rollback")(rollback)
app.add_typer(serving_schema_app, name="serving-schema")


# --------------------------------------------------------------------------- models


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
    services, actor = _connect(ctx)
    page = services.registry.models.search_registered_models(
        actor, filter_string=filter_string, max_results=max_results, page_token=page_token
    )
    out.show(list(page.items), as_json=as_json, view=out.models_table(page.items))
    if page.next_page_token:
        typer.echo(f"more models match: continue with --page-token {page.next_page_token}", err=True)


@models_app.command("create")
def models_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    description: Annotated[str | None, typer.Option(help="Description.")] = None,
    tag: TagOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an empty registered model."""
    tags = _tags(tag)
    services, actor = _connect(ctx)
    model = services.registry.models.create_registered_model(actor, name=name, description=description, tags=tags)
    out.show(model, as_json=as_json, message=f"Created registered model '{model.name}'.")


@models_app.command("show")
def models_show(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Show a model with its tags, aliases and latest version per stage."""
    services, actor = _connect(ctx)
    model = services.registry.models.get_registered_model(actor, name)
    out.show(model, as_json=as_json, view=out.model_detail(model))


@models_app.command("describe")
def models_describe(ctx: typer.Context, name: str, text: str, as_json: JsonOpt = False) -> None:
    """Replace a model's description."""
    services, actor = _connect(ctx)
    model = services.registry.models.update_registered_model(actor, name=name, description=text)
    out.show(model, as_json=as_json, message=f"Updated the description of '{model.name}'.")


@models_app.command("rename")
def models_rename(ctx: typer.Context, name: str, new_name: str, as_json: JsonOpt = False) -> None:
    """Rename a model; its versions, tags and aliases follow."""
    services, actor = _connect(ctx)
    model = services.registry.models.rename_registered_model(actor, name=name, new_name=new_name)
    out.show(model, as_json=as_json, message=f"Renamed '{name}' to '{model.name}'.")


@models_app.command("delete")
def models_delete(ctx: typer.Context, name: str, yes: YesOpt = False) -> None:
    """Delete a model with all its versions and their artifacts."""
    services, actor = _connect(ctx)
    if not yes:  # a missing model fails before the prompt
        services.registry.models.get_registered_model(actor, name)
        typer.confirm(f"Delete registered model '{name}' with all its versions and artifacts?", abort=True, err=True)
    services.registry.models.delete_registered_model(actor, name)
    _done(f"Deleted registered model '{name}'.")


# --------------------------------------------------------------------------- versions


@versions_app.command("register")
def versions_register(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    source: Annotated[str, typer.Argument(help="Artifact source: s3://…, file://… or an absolute path.")],
    run_id: Annotated[str | None, typer.Option(help="The run that produced the artifact.")] = None,
    description: Annotated[str | None, typer.Option(help="Description.")] = None,
    tag: TagOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Copy an artifact into the registry as the model's next version."""
    tags = _tags(tag)
    services, actor = _connect(ctx)
    with out.upload_progress(f"Uploading {model}", out.local_source_size(source)) as progress:
        version = services.registry.registration.create_model_version(
            actor, name=model, source=source, run_id=run_id, description=description, tags=tags,
            progress=progress,
        )
    out.show(version, as_json=as_json,
             message=f"Registered '{version.name}' version {version.version} (digest {version.digest}).")


@versions_app.command("list")
def versions_list(ctx: typer.Context, model: str, as_json: JsonOpt = False) -> None:
    """List a model's versions, newest first."""
    services, actor = _connect(ctx)
    versions: list[ModelVersion] = []
    page_token: str | None = None
    while True:
        page = services.registry.versions.list_model_versions(actor, name=model, page_token=page_token)
        versions.extend(page.items)
        page_token = page.next_page_token
        if page_token is None:
            break
    out.show(versions, as_json=as_json, view=out.versions_table(versions))


@versions_app.command("show")
def versions_show(ctx: typer.Context, model: str, version: str, as_json: JsonOpt = False) -> None:
    """Show one version."""
    services, actor = _connect(ctx)
    found = services.registry.versions.get_model_version(actor, name=model, version=version)
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
    as_json: JsonOpt = False,
) -> None:
    """Move a version to another stage."""
    services, actor = _connect(ctx)
    moved = services.registry.stages.transition_stage(
        actor, name=model, version=version, stage=stage, archive_existing_versions=archive_existing
    )
    out.show(moved, as_json=as_json, message=f"'{moved.name}' version {moved.version} is now in {moved.current_stage}.")


@versions_app.command("describe")
def versions_describe(
    ctx: typer.Context, model: str, version: str, text: str, as_json: JsonOpt = False
) -> None:
    """Replace a version's description."""
    services, actor = _connect(ctx)
    updated = services.registry.versions.update_model_version(actor, name=model, version=version, description=text)
    out.show(updated, as_json=as_json,
             message=f"Updated the description of '{updated.name}' version {updated.version}.")


@versions_app.command("delete")
def versions_delete(ctx: typer.Context, model: str, version: str, yes: YesOpt = False) -> None:
    """Delete a version and its artifact (its number is never reused)."""
    services, actor = _connect(ctx)
    if not yes:
        services.registry.versions.get_model_version(actor, name=model, version=version)
        typer.confirm(f"Delete '{model}' version {version} and its artifact?", abort=True, err=True)
    services.registry.versions.delete_model_version(actor, name=model, version=version)
    _done(f"Deleted '{model}' version {version}.")


# --------------------------------------------------------------------------- aliases


@aliases_app.command("set")
def aliases_set(ctx: typer.Context, model: str, alias: str, version: str) -> None:
    """Point an alias at a version."""
    services, actor = _connect(ctx)
    services.registry.aliases.set_alias(actor, name=model, alias=alias, version=version)
    _done(f"Alias '{alias}' of '{model}' now names version {version}.")


@aliases_app.command("delete")
def aliases_delete(ctx: typer.Context, model: str, alias: str) -> None:
    """Remove an alias (a missing alias is not an error)."""
    services, actor = _connect(ctx)
    services.registry.aliases.delete_alias(actor, name=model, alias=alias)
    _done(f"Alias '{alias}' of '{model}' removed.")


@aliases_app.command("show")
def aliases_show(ctx: typer.Context, model: str, alias: str, as_json: JsonOpt = False) -> None:
    """Show the version an alias names ('latest' names the newest version)."""
    services, actor = _connect(ctx)
    found = services.registry.aliases.get_version_by_alias(actor, name=model, alias=alias)
    out.show(found, as_json=as_json, view=out.version_detail(found))


# --------------------------------------------------------------------------- tags


@tags_app.command("set")
def tags_set(ctx: typer.Context, model: str, key: str, value: str, version: VersionOpt = None) -> None:
    """Set a tag on a model, or on one of its versions with --version."""
    services, actor = _connect(ctx)
    if version is None:
        services.registry.models.set_registered_model_tag(actor, name=model, key=key, value=value)
        _done(f"Tag '{key}' set on '{model}'.")
    else:
        services.registry.versions.set_model_version_tag(actor, name=model, version=version, key=key, value=value)
        _done(f"Tag '{key}' set on '{model}' version {version}.")


@tags_app.command("delete")
def tags_delete(ctx: typer.Context, model: str, key: str, version: VersionOpt = None) -> None:
    """Delete a tag from a model, or from one of its versions with --version."""
    services, actor = _connect(ctx)
    if version is None:
        services.registry.models.delete_registered_model_tag(actor, name=model, key=key)
        _done(f"Tag '{key}' removed from '{model}'.")
    else:
        services.registry.versions.delete_model_version_tag(actor, name=model, version=version, key=key)
        _done(f"Tag '{key}' removed from '{model}' version {version}.")


# --------------------------------------------------------------------------- audit


@audit_app.command("list")
def audit_list(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Only events about this model.")] = None,
    after_seq: Annotated[int, typer.Option(help="Only events after this sequence number.")] = 0,
    limit: Annotated[int, typer.Option(help="At most this many events.")] = 100,
    newest: Annotated[bool, typer.Option("--newest", help="The newest events first.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List audit events in sequence order (or newest first)."""
    services, actor = _connect(ctx)
    events = services.registry.audit.list_audit_events(
        actor, model_name=model, after_seq=after_seq, limit=limit, newest_first=newest
    )
    out.show(events, as_json=as_json, view=out.audit_table(events))


@audit_app.command("verify")
def audit_verify(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Recompute the audit hash chain; exit 1 if any event was edited, removed or reordered."""
    services, actor = _connect(ctx)
    result = services.registry.audit.verify_audit_chain(actor)
    if as_json:
        out.emit_json(result)
    if result.ok:
        if not as_json:
            _done(f"audit chain intact: {result.events_checked} events")
        return
    typer.echo(
        f"error: AUDIT_CHAIN_BROKEN: event seq={result.first_bad_seq}: {result.problem} "
        f"({result.events_checked} events before it verified)",
        err=True,
    )
    raise typer.Exit(1)


# --------------------------------------------------------------------------- users


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
    services, actor = _connect(ctx)
    user, token = services.users.create_user(actor, name=name, roles=role or [])
    if as_json:
        out.emit_json({"user": user, "token": token})
    else:
        _done(f"Created user '{user.name}' (roles: {', '.join(user.roles)}).")
        _done(f"Token (shown once, store it now): {token}")


@users_app.command("list")
def users_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List users and their roles."""
    services, actor = _connect(ctx)
    users = services.users.list_users(actor)
    out.show(users, as_json=as_json, view=out.users_table(users))


def main() -> None:
    """Console-script entry point: domain errors become one line and exit code 1."""
    try:
        app()
    except RegistryError as exc:  # normally handled by the root group already
        typer.echo(f"error: {exc.error_code}: {exc.message}", err=True)
        sys.exit(1)
