"""``calabi promote``, ``rollback``, ``sign-off``, ``reject``, ``cancel``, ``recheck``: governed promotions.

Each is one call to ``/api/v1/promotions…``; the server starts and signals the promotion
workflows, so the CLI needs only the URL and a token.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from calabi.cli import output as out
from calabi.cli.context import api
from calabi.cli.http import segment
from calabi.cli.options import JsonOpt

__all__ = ["PromotionId", "cancel", "promote", "recheck", "reject", "rollback", "sign_off"]

PromotionId = Annotated[str, typer.Argument(help="Promotion id (see 'calabi promotions list').")]


# --------------------------------------------------------------------------- request


def promote(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="The candidate version.")],
    to: Annotated[str, typer.Option("--to", help="Target stage: Production or Staging.", show_default=False)],
    reason: Annotated[str, typer.Option("--reason", help="Why this version should be promoted.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Request a governed promotion; its checks start at once."""
    promotion = api(ctx).post("/promotions", {"model": model, "version": version, "target_stage": to,
                                              "justification": reason})
    _requested(promotion, as_json)


def rollback(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    reason: Annotated[str, typer.Option("--reason", help="Why Production must go back.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Request re-promotion of the previous Production version (rollback policy)."""
    promotion = api(ctx).post(f"/models/{segment(model)}/rollback", {"justification": reason})
    _requested(promotion, as_json)


def _requested(promotion: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.emit_json(promotion)
        return
    what = "rollback" if promotion["kind"] == "rollback" else "promotion"
    typer.echo(
        f"Requested {what} {promotion['id']}: '{promotion['model_name']}' version {promotion['version']} → "
        f"{promotion['target_stage']} (status {promotion['status']})."
    )
    typer.echo(f"Follow it with: calabi promotions watch {promotion['id']}")


# --------------------------------------------------------------------------- decisions


def sign_off(
    ctx: typer.Context,
    promotion_id: PromotionId,
    comment: Annotated[str, typer.Option("--comment", help="A note kept with the sign-off.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Sign a promotion off (the policy's approver role; not the requester unless the policy allows it)."""
    state = _decide(ctx, promotion_id, "sign-off", {"comment": comment})
    if as_json:
        out.emit_json(state)
        return
    required = state["required_approvals"]
    count = f"{len(state['approvals'])} of {required}" if required else "recorded"
    typer.echo(f"Signed off promotion {state['promotion_id']} ({_subject(state)}): sign-offs {count}.")


def reject(
    ctx: typer.Context,
    promotion_id: PromotionId,
    reason: Annotated[str, typer.Option("--reason", help="Why the promotion is rejected.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Reject a promotion with a reason (approver role)."""
    _decided(_decide(ctx, promotion_id, "reject", {"reason": reason}), "Rejected", as_json)


def cancel(
    ctx: typer.Context,
    promotion_id: PromotionId,
    reason: Annotated[str, typer.Option("--reason", help="Why the request is withdrawn.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Withdraw a promotion (its requester or an admin)."""
    _decided(_decide(ctx, promotion_id, "cancel", {"reason": reason}), "Cancelled", as_json)


def recheck(ctx: typer.Context, promotion_id: PromotionId, as_json: JsonOpt = False) -> None:
    """Run a promotion's checks again after fixing what failed (its requester or an admin)."""
    _decided(_decide(ctx, promotion_id, "recheck", None), "Re-running the checks of", as_json)


def _decide(ctx: typer.Context, promotion_id: str, action: str, body: dict[str, str] | None) -> dict[str, Any]:
    """POST the decision; the workflow's state after it."""
    state: dict[str, Any] = api(ctx).post(f"/promotions/{segment(promotion_id)}/{action}", body)
    return state


def _subject(state: dict[str, Any]) -> str:
    return f"'{state['model']}' version {state['version']} → {state['target_stage']}"


def _decided(state: dict[str, Any], verb: str, as_json: bool) -> None:
    if as_json:
        out.emit_json(state)
    else:
        typer.echo(f"{verb} promotion {state['promotion_id']} ({_subject(state)}).")
