"""``calabi reviews``: the post-implementation reviews of admins' break-glass moves into Production."""

from __future__ import annotations

from typing import Annotated

import typer

from calabi.cli import output as out
from calabi.cli.context import api
from calabi.cli.options import JsonOpt

__all__ = ["reviews_app"]

reviews_app = typer.Typer(no_args_is_help=True, help="Post-implementation reviews of break-glass moves.")


@reviews_app.command("list")
def reviews_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="open (overdue included), overdue or completed.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model's reviews.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List reviews, most urgent first."""
    reviews = api(ctx).get("/reviews", status=status, model=model)["reviews"]
    out.show(reviews, as_json=as_json, view=out.reviews_table(reviews))


@reviews_app.command("complete")
def reviews_complete(
    ctx: typer.Context,
    review_id: Annotated[int, typer.Argument(metavar="ID")],
    outcome: Annotated[str, typer.Option(help="accepted or rollback_required.")],
    note: Annotated[str, typer.Option(help="What the review found.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Complete a review (a reviewer other than the admin who broke the glass)."""
    review = api(ctx).post(f"/reviews/{review_id}/complete", {"outcome": outcome, "note": note})
    out.show(review, as_json=as_json,
             message=f"Review {review['id']} of '{review['model_name']}' version {review['version']} completed: "
                     f"{review['outcome']}.")
