"""What the ``calabi`` CLI prints: rich tables for people, JSON for machines, one-line errors, progress.

Tables render the API's JSON objects (``dict``); ``--json`` prints them as the server sent them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import typer
from pydantic import BaseModel
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from typer.core import TyperGroup

__all__ = [
    "OneLineErrorsGroup",
    "audit_table",
    "emit_json",
    "model_detail",
    "models_table",
    "one_line",
    "print_rich",
    "upload_progress",
    "users_table",
    "version_detail",
    "versions_table",
]

Json = Mapping[str, Any]
"""One JSON object of the API (a model, a version, an audit event, a user)."""


class OneLineErrorsGroup(TyperGroup):
    """A root command group that turns every anticipated failure into ``error: CODE: message`` on stderr."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except Exception as exc:
            code, line = _failure(exc)
            if line:
                typer.echo(f"error: {line}", err=True)
            sys.exit(code)
        sys.exit(result if isinstance(result, int) else 0)


def _failure(exc: Exception) -> tuple[int, str]:
    """Exit code and one-line message for a failure; unexpected exceptions are re-raised."""
    code, message = getattr(exc, "error_code", None), getattr(exc, "message", None)
    if isinstance(code, str) and isinstance(message, str):  # ApiError, and the server's own errors in `serve`
        return 1, one_line(f"{code}: {message}")
    if isinstance(exc, typer.Abort):
        return 1, "ABORTED: nothing was changed"
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "NoArgsIsHelpError" in names:  # the help text has been printed already (or is the message)
        help_text = str(getattr(exc, "message", ""))
        if help_text:
            typer.echo(help_text)
        return int(getattr(exc, "exit_code", 2)), ""
    if "ClickException" in names:  # usage errors; typer vendors click, so match by name
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        return int(getattr(exc, "exit_code", 2)), one_line(f"USAGE: {message}{hint}")
    if isinstance(exc, OSError):
        return 1, one_line(f"INTERNAL_ERROR: {type(exc).__name__}: {exc}")
    raise exc


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(text.split())


def emit_json(value: Any) -> None:
    """Print ``value`` as JSON on stdout (pydantic ``model_dump(mode="json")`` for models)."""
    typer.echo(json.dumps(_plain(value), indent=2))


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def show(
    value: Any, *, as_json: bool,
    view: RenderableType | None = None, message: str | None = None,
) -> None:
    """``--json``: the value as JSON; otherwise its rich ``view`` or a one-line ``message``."""
    if as_json:
        emit_json(value)
    elif view is not None:
        print_rich(view)
    elif message is not None:
        typer.echo(message)


def print_rich(*renderables: RenderableType) -> None:
    """Print to stdout through rich (a fresh console, so redirected streams are honoured)."""
    Console().print(*renderables)


def timestamp(ms: int) -> str:
    """Epoch milliseconds as UTC ``YYYY-MM-DD HH:MM:SSZ``."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _short(text: str, limit: int = 60) -> str:
    """The first line of ``text``, at most ``limit`` characters, with "…" when something was cut."""
    line = text.splitlines()[0] if text else ""
    if len(line) > limit:
        return line[: limit - 1] + "…"
    return line if line == text else line + "…"


def _tags(tags: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(tags.items()))


def models_table(models: Sequence[Json]) -> Table:
    """One row per registered model."""
    table = Table(title=f"{len(models)} registered model(s)", title_justify="left")
    for column in ("Name", "Latest versions", "Aliases", "Description"):
        table.add_column(column, overflow="fold")
    table.add_column("Updated", min_width=10)
    for model in models:
        latest = ", ".join(f"{v['current_stage']}: v{v['version']}" for v in model["latest_versions"])
        aliases = ", ".join(f"@{a['alias']}→v{a['version']}" for a in model["aliases"])
        table.add_row(escape(model["name"]), latest or "-", escape(aliases) or "-",
                      escape(_short(model["description"])), timestamp(model["last_updated_timestamp"]))
    return table


def model_detail(model: Json) -> Group:
    """A model's fields, then its latest versions."""
    fields = fields_table([
        ("Name", model["name"]),
        ("Description", model["description"] or "-"),
        ("Tags", _tags(model["tags"]) or "-"),
        ("Aliases", ", ".join(f"@{a['alias']} → v{a['version']}" for a in model["aliases"]) or "-"),
        ("Risk tier", model.get("risk_tier") or "-"),
        ("Owner", model.get("owner_group") or "-"),
        ("Restricted", "yes" if model.get("restricted") else "no"),
        ("Created", timestamp(model["creation_timestamp"])),
        ("Updated", timestamp(model["last_updated_timestamp"])),
    ])
    if not model["latest_versions"]:
        return Group(fields)
    return Group(fields, versions_table(model["latest_versions"], title="Latest version per stage"))


def versions_table(versions: Sequence[Json], *, title: str | None = None) -> Table:
    """One row per model version."""
    table = Table(title=title or f"{len(versions)} version(s)", title_justify="left")
    for column in ("Model", "Version", "Stage", "Aliases", "Run", "Description"):
        table.add_column(column, overflow="fold", no_wrap=column in ("Version", "Stage"))
    table.add_column("Created", min_width=10)
    for version in versions:
        table.add_row(
            escape(version["name"]), str(version["version"]), version["current_stage"],
            escape(", ".join(f"@{a}" for a in version["aliases"])) or "-", escape(version["run_id"]) or "-",
            escape(_short(version["description"], 40)), timestamp(version["creation_timestamp"]),
        )
    return table


def version_detail(version: Json) -> Table:
    """Every field of one model version."""
    status_message = version["status_message"]
    return fields_table([
        ("Model", version["name"]),
        ("Version", str(version["version"])),
        ("Stage", version["current_stage"]),
        ("Status", version["status"] + (f" ({status_message})" if status_message else "")),
        ("Aliases", ", ".join(f"@{a}" for a in version["aliases"]) or "-"),
        ("Description", version["description"] or "-"),
        ("Tags", _tags(version["tags"]) or "-"),
        ("Source", version["source"]),
        ("Stored at", version["storage_location"]),
        ("Digest", version["digest"]),
        ("Signature", version["signature"] or "-"),
        ("Run", version["run_id"] or "-"),
        ("Registered by", version["user_id"]),
        ("Created", timestamp(version["creation_timestamp"])),
        ("Updated", timestamp(version["last_updated_timestamp"])),
    ])


def audit_table(events: Sequence[Json]) -> Table:
    """One row per audit event."""
    table = Table(title=f"{len(events)} audit event(s)", title_justify="left")
    table.add_column("Seq", no_wrap=True)
    table.add_column("Time", min_width=10)
    for column in ("Actor", "Action", "Subject", "Change"):
        table.add_column(column, overflow="fold")
    for event in events:
        table.add_row(str(event["seq"]), timestamp(event["timestamp"]), escape(event["actor"]), event["action"],
                      escape(event["subject"]), escape(_change(event["before"], event["after"])))
    return table


def production_table(name: str, stints: Sequence[Json]) -> Table:
    """One row per period a version was Production, newest first."""
    table = Table(title=f"Production history of {escape(name)}", title_justify="left")
    for column in ("Version", "Since", "Until", "Moved by", "Why", "Approved by"):
        table.add_column(column, overflow="fold")
    for stint in stints:
        until = timestamp(stint["until"]) if stint["until"] is not None else "now"
        moved_by = f"{stint['moved_by']} (break-glass)" if stint["break_glass"] else stint["moved_by"]
        if stint.get("review"):
            moved_by += f", review {stint['review']['id']} {stint['review']['status']}"
        table.add_row(str(stint["version"]), timestamp(stint["since"]), until, escape(moved_by),
                      escape(_short(stint["why"])), escape(", ".join(stint["approved_by"])))
    return table


def _change(before: Any, after: Any) -> str:
    """A compact summary: ``key=value`` for new values, ``key: old → new`` for changed ones."""
    if not isinstance(before, dict | None) or not isinstance(after, dict | None):
        return f"{_value(before)} → {_value(after)}"
    old, new = before or {}, after or {}
    parts: list[str] = []
    for key in dict.fromkeys([*old, *new]):
        if key not in old:
            if new[key] not in (None, "", [], {}, False):
                parts.append(f"{key}={_value(new[key])}")
        elif key not in new:
            parts.append(f"{key}: {_value(old[key])} → ∅")
        elif old[key] == new[key]:
            parts.append(f"{key}={_value(new[key])}")
        else:
            parts.append(f"{key}: {_value(old[key])} → {_value(new[key])}")
    return "; ".join(parts)


def _value(value: Any, limit: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def reviews_table(reviews: Sequence[Json]) -> Table:
    """One row per post-implementation review."""
    table = Table(title="Post-implementation reviews", title_justify="left")
    for column in ("Id", "Change", "Status", "Due", "Broken by", "Reason", "Outcome"):
        table.add_column(column, overflow="fold")
    for review in reviews:
        outcome = f"{review['outcome']} by {review['completed_by']}" if review["outcome"] else ""
        table.add_row(str(review["id"]), escape(f"{review['model_name']} v{review['version']}"), review["status"],
                      timestamp(review["due_at"]), escape(review["admin"]), escape(_short(review["reason"])),
                      escape(outcome))
    return table


def users_table(users: Sequence[Json]) -> Table:
    """One row per user."""
    table = Table(title=f"{len(users)} user(s)", title_justify="left")
    for column in ("Name", "Roles", "Primary group"):
        table.add_column(column, overflow="fold")
    table.add_column("Created", min_width=10)
    for user in users:
        table.add_row(escape(user["name"]), ", ".join(user["roles"]), escape(user.get("primary_group") or "-"),
                      timestamp(user["creation_timestamp"]))
    return table


def tokens_table(tokens: Sequence[Json]) -> Table:
    """One row per personal token."""
    table = Table(title=f"{len(tokens)} token(s)", title_justify="left")
    table.add_column("Id", justify="right")
    table.add_column("Name", overflow="fold")
    for column in ("Created", "Expires", "Last used", "Revoked"):
        table.add_column(column, min_width=10)
    for token in tokens:
        table.add_row(str(token["id"]), escape(token["name"]), timestamp(token["creation_timestamp"]),
                      *(timestamp(token[key]) if token[key] else "-" for key in ("expires_at", "last_used_at")),
                      timestamp(token["revoked_at"]) if token["revoked_at"] else "-")
    return table


def groups_table(groups: Sequence[Json]) -> Table:
    """One row per group with its members."""
    table = Table(title=f"{len(groups)} group(s)", title_justify="left")
    for column in ("Name", "Members", "Description"):
        table.add_column(column, overflow="fold")
    table.add_column("Created", min_width=10)
    for group in groups:
        table.add_row(escape(group["name"]), escape(", ".join(group["members"])) or "-",
                      escape(group["description"]) or "-", timestamp(group["created_at"]))
    return table


def grants_view(permissions: Json) -> Group:
    """A model's owner and restricted flag, then one row per grant."""
    fields = fields_table([
        ("Model", permissions["name"]),
        ("Owner", permissions["owner_group"] or "-"),
        ("Restricted", "yes (only admins, the owner and grants see it)" if permissions["restricted"] else "no"),
    ])
    table = Table(title=f"{len(permissions['grants'])} grant(s)", title_justify="left")
    for column in ("Kind", "Principal", "Permission"):
        table.add_column(column, overflow="fold")
    for grant in permissions["grants"]:
        table.add_row(grant["principal_kind"], escape(grant["principal"]), grant["permission"])
    return Group(fields, table)


def fields_table(rows: Sequence[tuple[str, str]]) -> Table:
    """Label/value rows as a borderless two-column grid."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, value in rows:
        table.add_row(label, escape(value))
    return table


@contextmanager
def upload_progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr fed with byte increments (a spinner and counter if ``total`` is unknown).

    Drawn only when stderr is a terminal, so piped output and ``--json`` stay clean.
    """
    console = Console(stderr=True)
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn()]
    with Progress(*columns, TransferSpeedColumn(), console=console, transient=True,
                  disable=not console.is_terminal) as progress:
        task = progress.add_task(escape(description), total=total)

        def advance(nbytes: int) -> None:
            progress.advance(task, nbytes)

        yield advance
