"""``calabi webhooks``: subscriptions, their delivery log with every attempt, redelivery (admin)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from calabi.cli import output as out
from calabi.cli.context import api
from calabi.cli.http import segment
from calabi.cli.options import JsonOpt

__all__ = ["webhooks_app"]

webhooks_app = typer.Typer(no_args_is_help=True, help="Webhooks: subscriptions, delivery log, redelivery (admin).")
WebhookId = Annotated[str, typer.Argument(help="The webhook's id (see 'calabi webhooks list').")]


def _epoch_ms(value: str | None, option: str) -> int | None:
    """An ISO 8601 instant (UTC unless it says otherwise) or epoch milliseconds."""
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{option} takes an ISO 8601 time or epoch milliseconds, not '{value}'") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.now().astimezone().tzinfo)
    return int(parsed.timestamp() * 1000)


def webhooks_table(hooks: list[dict[str, Any]]) -> Table:
    """One row per webhook."""
    table = Table(title=f"{len(hooks)} webhook(s)", title_justify="left")
    for column in ("Id", "Name", "URL", "Status", "Events", "Failures"):
        table.add_column(column, overflow="fold")
    for hook in hooks:
        table.add_row(hook["id"], escape(hook["name"]), escape(hook["url"]), hook["status"],
                      ", ".join(hook["events"]), str(hook["consecutive_failures"]))
    return table


def deliveries_table(deliveries: list[dict[str, Any]]) -> Table:
    """One row per attempt, grouped by delivery (newest delivery first)."""
    table = Table(title=f"{len(deliveries)} delivery(ies)", title_justify="left")
    for column in ("Delivery id", "Event", "Model", "Status", "Attempt", "At", "Answer", "ms"):
        table.add_column(column, overflow="fold")
    for delivery in deliveries:
        first = True
        for attempt in delivery["attempt_log"] or [None]:
            head = [delivery["id"], delivery["event"], escape(delivery["model_name"]), delivery["status"]] if first \
                else ["", "", "", ""]
            first = False
            if attempt is None:
                table.add_row(*head, "-", "", "not sent yet", "")
                continue
            answer = str(attempt["status_code"]) if attempt["status_code"] is not None else attempt["error"]
            table.add_row(*head, str(attempt["attempt"]), out.timestamp(attempt["started_at"]), escape(answer),
                          str(attempt["latency_ms"]))
    return table


@webhooks_app.command("list")
def webhooks_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List webhooks (secrets are never shown)."""
    hooks = api(ctx).get("/webhooks", max_results=1000)["items"]
    out.show(hooks, as_json=as_json, view=webhooks_table(hooks))


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    ctx: typer.Context, webhook_id: WebhookId,
    limit: Annotated[int, typer.Option(help="How many deliveries, newest first.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """A webhook's delivery log: every attempt, its answer and latency."""
    deliveries = api(ctx).get(f"/webhooks/{segment(webhook_id)}/deliveries", limit=limit)
    out.show(deliveries, as_json=as_json, view=deliveries_table(deliveries))


@webhooks_app.command("redeliver")
def webhooks_redeliver(
    ctx: typer.Context, webhook_id: WebhookId,
    delivery: Annotated[str | None, typer.Option("--delivery", help="One delivery id.", show_default=False)] = None,
    since: Annotated[str | None, typer.Option(help="Events from (ISO 8601 or epoch ms).", show_default=False)] = None,
    until: Annotated[str | None, typer.Option(help="Events until (ISO 8601 or epoch ms).", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Send one delivery, or the deliveries of a time range, again (same delivery ids)."""
    body = {"delivery_id": delivery, "since": _epoch_ms(since, "--since"), "until": _epoch_ms(until, "--until")}
    given = {key: value for key, value in body.items() if value is not None}
    result = api(ctx).post(f"/webhooks/{segment(webhook_id)}/redeliver", given)
    out.show(result, as_json=as_json, message=f"Queued {result['queued']} delivery(ies) again.")
