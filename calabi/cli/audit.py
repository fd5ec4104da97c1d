"""``calabi audit``: the hash-chained audit log."""

from __future__ import annotations

from typing import Annotated

import typer

from calabi.cli import output as out
from calabi.cli.context import api
from calabi.cli.options import JsonOpt

__all__ = ["audit_app"]

audit_app = typer.Typer(no_args_is_help=True, help="The hash-chained audit log.")


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
    events = api(ctx).get("/audit", model=model, after_seq=after_seq, limit=limit, newest_first=newest)
    out.show(events, as_json=as_json, view=out.audit_table(events))


@audit_app.command("verify")
def audit_verify(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Recompute the audit hash chain; exit 1 if any event was edited, removed or reordered."""
    result = api(ctx).get("/audit/verify")
    if as_json:
        out.emit_json(result)
    if result["ok"]:
        if not as_json:
            typer.echo(f"audit chain intact: {result['events_checked']} events")
        return
    typer.echo(
        f"error: AUDIT_CHAIN_BROKEN: event seq={result['first_bad_seq']}: {result['problem']} "
        f"({result['events_checked']} events before it verified)",
        err=True,
    )
    raise typer.Exit(1)
