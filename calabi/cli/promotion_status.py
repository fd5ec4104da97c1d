"""``calabi promotions list|show|watch|export``: following promotions through ``GET /api/v1/promotions…``.

``show`` and ``watch`` read the read model (its history; for promotions recorded before the read
model kept one, the audit log's); ``export`` saves a promotion's evidence pack.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from calabi.cli import output as out
from calabi.cli.context import api
from calabi.cli.http import ApiClient, ApiError, segment
from calabi.cli.options import JsonOpt
from calabi.cli.promotion_tables import promotion_detail, promotions_table, read_approvals, read_history
from calabi.cli.promotions import PromotionId
from policies.status import TERMINAL_STATUSES, PromotionStatus
from workflows.models import StateChange

__all__ = ["promotions_app"]

promotions_app = typer.Typer(no_args_is_help=True, help="Promotion requests: list, show, watch, export.")

WATCH_INTERVAL_S = 1.0
AUDIT_HISTORY_LIMIT = 5000  # newest events of the model searched for a finished promotion's history


@promotions_app.command("list")
def promotions_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="Only promotions in this status, e.g. awaiting_sign_off.")] = None,
    model: Annotated[str | None, typer.Option(help="Only promotions of this model.")] = None,
    awaiting_me: Annotated[
        bool, typer.Option("--awaiting-me", help="Only promotions waiting for my sign-off.")
    ] = False,
    max_results: Annotated[int, typer.Option(help="At most this many promotions.")] = 100,
    page_token: Annotated[str | None, typer.Option(help="Continue a previous listing.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List promotions, newest first."""
    page = api(ctx).get("/promotions", status=status, model=model, awaiting="me" if awaiting_me else None,
                        max_results=max_results, page_token=page_token)
    out.show(page["promotions"], as_json=as_json, view=promotions_table(page["promotions"]))
    if page.get("next_page_token"):
        typer.echo(f"more promotions match: continue with --page-token {page['next_page_token']}", err=True)


@promotions_app.command("show")
def promotions_show(ctx: typer.Context, promotion_id: PromotionId, as_json: JsonOpt = False) -> None:
    """Show a promotion: checklist with its numbers, sign-offs, deadline and history."""
    client = api(ctx)
    promotion = _detail(client, promotion_id)
    history = read_history(promotion["history"]) or _audited_history(client, promotion)
    out.show({"promotion": promotion, "history": history}, as_json=as_json, view=promotion_detail(promotion, history))


@promotions_app.command("watch")
def promotions_watch(
    ctx: typer.Context,
    promotion_id: PromotionId,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.", min=0)] = 600.0,
) -> None:
    """Follow a promotion until it ends: exit 0 once promoted, 1 otherwise (or on timeout)."""
    status, message = _watch(api(ctx), promotion_id, timeout)
    if status == PromotionStatus.PROMOTED:
        return
    if status in TERMINAL_STATUSES:
        typer.echo(f"error: NOT_PROMOTED: promotion {promotion_id} ended {status}: {out.one_line(message)}",
                   err=True)
    else:
        typer.echo(f"error: DEADLINE_EXCEEDED: promotion {promotion_id} is still {status} after {timeout:g} s",
                   err=True)
    raise typer.Exit(1)


def _detail(client: ApiClient, promotion_id: str) -> dict[str, Any]:
    """The promotion's read model."""
    promotion: dict[str, Any] = client.get(f"/promotions/{segment(promotion_id)}")["promotion"]
    return promotion


def _watch(client: ApiClient, promotion_id: str, timeout: float) -> tuple[str, str]:
    """Print each status change and sign-off until a terminal status or the timeout; the last status."""
    deadline = time.monotonic() + timeout
    shown_status, shown_approvals = "", 0
    while True:
        promotion = _detail(client, promotion_id)
        status = promotion["status"]
        approvals = read_approvals(promotion["approvals"])
        for approval in approvals[shown_approvals:]:
            note = f": {approval.comment}" if approval.comment else ""
            _say(f"signed off by {approval.user}{note}")
        shown_approvals = max(shown_approvals, len(approvals))
        if status != shown_status:
            note = promotion["message"]
            _say(f"{status}" + (f"  {out.one_line(note)}" if note else ""))
            shown_status = status
        if status in TERMINAL_STATUSES:
            return status, promotion["message"]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return status, ""
        time.sleep(min(WATCH_INTERVAL_S, remaining))  # polling the server with a deadline


@promotions_app.command("export")
def promotions_export(
    ctx: typer.Context,
    promotion_id: PromotionId,
    out_file: Annotated[Path, typer.Option("--out", help="Write the evidence pack (JSON) to this file.",
                                           show_default=False, dir_okay=False)],
) -> None:
    """Save a promotion's evidence pack: candidate, policy, checks, sign-offs, notifications, audit chain."""
    pack = api(ctx).get(f"/promotions/{segment(promotion_id)}/evidence-pack")
    try:
        out_file.write_text(json.dumps(pack, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ApiError("INVALID_PARAMETER_VALUE", f"cannot write {out_file}: {exc.strerror or exc}") from None
    audit = pack["audit"]
    typer.echo(f"Wrote the evidence pack of promotion {pack['promotion']['id']} to {out_file} "
               f"({len(audit['events'])} audit events, chain head {audit['head_seq']}).")


def _say(text: str) -> None:
    typer.echo(f"{datetime.now(tz=UTC).strftime('%H:%M:%SZ')}  {text}")
    sys.stdout.flush()


def _audited_history(client: ApiClient, promotion: dict[str, Any]) -> list[StateChange]:
    """A finished promotion's status changes, from the audit log (the workflow no longer answers)."""
    events = client.get("/audit", model=promotion["model_name"], limit=AUDIT_HISTORY_LIMIT, newest_first=True)
    history: list[StateChange] = []
    for event in reversed(events):
        change = _audited_change(event, promotion["id"])
        if change is not None and (not history or history[-1].status != change.status or change.note):
            history.append(change)
    return history


def _audited_change(event: dict[str, Any], promotion_id: str) -> StateChange | None:
    after = event["after"] if isinstance(event["after"], dict) else {}
    if after.get("promotion") != promotion_id:
        return None
    at = datetime.fromtimestamp(event["timestamp"] / 1000, tz=UTC)
    if event["action"] == "request_promotion":
        return StateChange(at=at, status=PromotionStatus.RUNNING_CHECKS, note=f"requested by {event['actor']}")
    if event["action"] == "promotion_state" and after.get("status") in PromotionStatus.__members__.values():
        note = after.get("message") if isinstance(after.get("message"), str) else ""
        return StateChange(at=at, status=PromotionStatus(after["status"]), note=note or "")
    return None
