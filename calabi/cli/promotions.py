"""``calabi`` promotion commands: thin adapters over PromotionService and the registry's promotion read model.

``promote``, ``sign-off``, ``reject``, ``cancel``, ``recheck`` and ``rollback`` talk to the
promotion workflows through Temporal (CALABI_TEMPORAL_ADDRESS, like the server and the
worker); ``promotions list`` and ``serving-schema`` only read or write the registry;
``promotions show`` and ``watch`` add the workflow's live state when Temporal answers.
Authentication and one-line errors are those of ``cli``.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Group
from rich.markup import escape
from rich.table import Table

from calabi.bootstrap import Services, temporal_connector
from calabi.cli import output as out
from calabi.cli.context import connect
from calabi.engine import PromotionService
from policies.checklist import Approval
from policies.evidence import SignatureSchema
from policies.results import Checklist, CheckResult, Number
from policies.status import TERMINAL_STATUSES, PromotionStatus
from registry_store.artifacts import MLMODEL_FILE, read_model_metadata
from registry_store.audit import Actor
from registry_store.entities import AuditEvent, Promotion
from registry_store.errors import InvalidParameterError, NotFoundError
from workflows.models import PromotionState, StateChange

__all__ = [
    "cancel",
    "promote",
    "promotions_app",
    "recheck",
    "reject",
    "rollback",
    "serving_schema_app",
    "sign_off",
]

T = TypeVar("T")

promotions_app = typer.Typer(no_args_is_help=True, help="Promotion requests: list, show, watch.")
serving_schema_app = typer.Typer(
    no_args_is_help=True, help="The live serving schema that promotions check signatures against."
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
PromotionId = Annotated[str, typer.Argument(help="Promotion id (see 'calabi promotions list').")]

WATCH_INTERVAL_S = 1.0
AUDIT_HISTORY_LIMIT = 5000  # newest events of the model searched for a finished promotion's history


# --------------------------------------------------------------------------- the engine


def _with_engine(services: Services, work: Callable[[PromotionService], Awaitable[T]]) -> T:
    """Run ``work`` with a PromotionService on a fresh event loop.

    The Temporal client lives only inside the coroutine, and is collected while the loop
    is still running (temporalio sdk-python#300: a client dropped at interpreter exit can
    abort with ``PyGILState_Release``).
    """

    async def main() -> T:
        engine: PromotionService | None = PromotionService(
            services.registry, temporal_connector(services.settings), task_queue=services.settings.temporal_task_queue
        )
        try:
            assert engine is not None
            return await work(engine)
        finally:
            engine = None
            gc.collect()
            await asyncio.sleep(0.1)

    return asyncio.run(main())


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
    services, actor = connect(ctx)
    promotion = _with_engine(
        services,
        lambda engine: engine.request(actor, model=model, version=version, target_stage=to, justification=reason),
    )
    _requested(promotion, as_json)


def rollback(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    reason: Annotated[str, typer.Option("--reason", help="Why Production must go back.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Request re-promotion of the previous Production version (rollback policy)."""
    services, actor = connect(ctx)
    promotion = _with_engine(services, lambda engine: engine.rollback(actor, model=model, justification=reason))
    _requested(promotion, as_json)


def _requested(promotion: Promotion, as_json: bool) -> None:
    if as_json:
        out.emit_json(promotion)
        return
    what = "rollback" if promotion.kind == "rollback" else "promotion"
    typer.echo(
        f"Requested {what} {promotion.id}: '{promotion.model_name}' version {promotion.version} → "
        f"{promotion.target_stage} (status {promotion.status})."
    )
    typer.echo(f"Follow it with: calabi promotions watch {promotion.id}")


# --------------------------------------------------------------------------- decisions


def sign_off(
    ctx: typer.Context,
    promotion_id: PromotionId,
    comment: Annotated[str, typer.Option("--comment", help="A note kept with the sign-off.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Sign a promotion off (approver role; never the requester)."""
    state = _decide(ctx, promotion_id, "sign_off", comment)
    if as_json:
        out.emit_json(state)
        return
    count = f"{len(state.approvals)} of {state.required_approvals}" if state.required_approvals else "recorded"
    typer.echo(f"Signed off promotion {state.promotion_id} ('{state.model}' version {state.version} → "
               f"{state.target_stage}): sign-offs {count}.")


def reject(
    ctx: typer.Context,
    promotion_id: PromotionId,
    reason: Annotated[str, typer.Option("--reason", help="Why the promotion is rejected.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Reject a promotion with a reason (approver role)."""
    if not reason.strip():
        raise typer.BadParameter("a rejection needs a reason", param_hint="'--reason'")
    state = _decide(ctx, promotion_id, "reject", reason)
    _decided(state, "Rejected", as_json)


def cancel(
    ctx: typer.Context,
    promotion_id: PromotionId,
    reason: Annotated[str, typer.Option("--reason", help="Why the request is withdrawn.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Withdraw a promotion (its requester or an admin)."""
    state = _decide(ctx, promotion_id, "cancel", reason)
    _decided(state, "Cancelled", as_json)


def recheck(ctx: typer.Context, promotion_id: PromotionId, as_json: JsonOpt = False) -> None:
    """Run a promotion's checks again after fixing what failed (its requester or an admin)."""
    state = _decide(ctx, promotion_id, "recheck", "")
    _decided(state, "Re-running the checks of", as_json)


def _decide(ctx: typer.Context, promotion_id: str, action: str, comment: str) -> PromotionState:
    services, actor = connect(ctx)
    return _with_engine(services, lambda engine: engine.decide(actor, promotion_id, action, comment))


def _decided(state: PromotionState, verb: str, as_json: bool) -> None:
    if as_json:
        out.emit_json(state)
    else:
        typer.echo(f"{verb} promotion {state.promotion_id} ('{state.model}' version {state.version} → "
                   f"{state.target_stage}).")


# --------------------------------------------------------------------------- promotions list / show / watch


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
    services, actor = connect(ctx)
    page = services.registry.promotions.list_promotions(
        actor, status=status, model=model, awaiting=actor if awaiting_me else None, max_results=max_results,
        page_token=page_token,
    )
    out.show(list(page.items), as_json=as_json, view=promotions_table(page.items))
    if page.next_page_token:
        typer.echo(f"more promotions match: continue with --page-token {page.next_page_token}", err=True)


@promotions_app.command("show")
def promotions_show(ctx: typer.Context, promotion_id: PromotionId, as_json: JsonOpt = False) -> None:
    """Show a promotion: checklist with its numbers, sign-offs, deadline and history."""
    services, actor = connect(ctx)
    promotion = services.registry.promotions.get_promotion(actor, promotion_id)
    live = _with_engine(services, lambda engine: engine.live_state(actor, promotion_id)) if promotion.live else None
    history = live.history if live is not None else _audited_history(services, actor, promotion)
    out.show({"promotion": promotion, "live": live, "history": history}, as_json=as_json,
             view=promotion_detail(promotion, live, history))


@promotions_app.command("watch")
def promotions_watch(
    ctx: typer.Context,
    promotion_id: PromotionId,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.", min=0)] = 600.0,
) -> None:
    """Follow a promotion until it ends: exit 0 once promoted, 1 otherwise (or on timeout)."""
    services, actor = connect(ctx)
    status, message = _with_engine(services, lambda engine: _watch(services, engine, actor, promotion_id, timeout))
    if status == PromotionStatus.PROMOTED:
        return
    if status in TERMINAL_STATUSES:
        typer.echo(f"error: NOT_PROMOTED: promotion {promotion_id} ended {status}: {_one_line(message)}", err=True)
    else:
        typer.echo(f"error: DEADLINE_EXCEEDED: promotion {promotion_id} is still {status} after {timeout:g} s",
                   err=True)
    raise typer.Exit(1)


async def _watch(
    services: Services, engine: PromotionService, actor: Actor, promotion_id: str, timeout: float
) -> tuple[str, str]:
    """Print each status change and sign-off until a terminal status or the timeout; the last status."""
    deadline = time.monotonic() + timeout
    shown_status, shown_approvals = "", 0
    while True:
        promotion = await asyncio.to_thread(services.registry.promotions.get_promotion, actor, promotion_id)
        live = await engine.live_state(actor, promotion_id) if promotion.live else None
        status = str(live.status) if live is not None else promotion.status
        approvals = live.approvals if live is not None else _approvals(promotion.approvals)
        for approval in approvals[shown_approvals:]:
            note = f": {approval.comment}" if approval.comment else ""
            _say(f"signed off by {approval.user}{note}")
        shown_approvals = max(shown_approvals, len(approvals))
        if status != shown_status:
            note = live.history[-1].note if live is not None and live.history else promotion.message
            _say(f"{status}" + (f"  {_one_line(note)}" if note else ""))
            shown_status = status
        if status in TERMINAL_STATUSES:
            return status, promotion.message if live is None else live.message or promotion.message
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return status, ""
        await asyncio.sleep(min(WATCH_INTERVAL_S, remaining))


def _say(text: str) -> None:
    typer.echo(f"{datetime.now(tz=UTC).strftime('%H:%M:%SZ')}  {text}")
    sys.stdout.flush()


# --------------------------------------------------------------------------- serving schema


@serving_schema_app.command("set")
def serving_schema_set(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    source: Annotated[
        str,
        typer.Argument(
            help="MLflow signature JSON, a file holding it, an MLmodel file or a model directory, or - for stdin.",
            show_default=False,
        ),
    ],
) -> None:
    """Set the live serving schema promotions are checked against."""
    signature = _signature_text(source)
    services, actor = connect(ctx)
    services.registry.schemas.set_serving_schema(actor, model=model, signature=signature)
    typer.echo(f"Serving schema of '{model}' set.")


@serving_schema_app.command("show")
def serving_schema_show(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    as_json: JsonOpt = False,
) -> None:
    """Show a model's live serving schema."""
    services, actor = connect(ctx)
    signature = services.registry.schemas.get_serving_schema(actor, model)
    if not signature:
        raise NotFoundError(f"No serving schema is set for {model}.")
    if as_json:
        out.emit_json({"model": model, "signature": signature})
        return
    try:
        schema = SignatureSchema.from_mlflow_json(signature)
    except ValueError:
        schema = None
    if schema is None:
        typer.echo(signature)
    else:
        out.print_rich(schema_table(model, schema))


def _signature_text(source: str) -> str:
    """The signature JSON named by ``source`` (inline, ``-``, a JSON file, an MLmodel file or a model dir)."""
    if source.lstrip().startswith("{"):
        return source
    if source == "-":
        return sys.stdin.read()
    path = Path(source)
    try:
        if path.is_dir() or path.name == MLMODEL_FILE:
            signature = read_model_metadata(path if path.is_dir() else path.parent).signature
            if not signature:
                raise InvalidParameterError(f"{path} has no MLmodel with a model signature.")
            return signature
        return path.read_text()
    except OSError as exc:
        raise InvalidParameterError(f"cannot read the serving schema from {source}: {exc.strerror or exc}") from exc


# --------------------------------------------------------------------------- rendering


def promotions_table(promotions: Sequence[Promotion]) -> Table:
    """One row per promotion."""
    table = Table(title=f"{len(promotions)} promotion(s)", title_justify="left")
    table.add_column("ID", no_wrap=True)
    for column in ("Model", "Version", "Target", "Kind", "Status", "Requester", "Sign-offs"):
        table.add_column(column, overflow="fold", no_wrap=column in ("Version", "Status"))
    table.add_column("Updated", min_width=10)
    for p in promotions:
        table.add_row(
            p.id, escape(p.model_name), str(p.version), p.target_stage, p.kind, p.status, escape(p.requester),
            f"{len(p.approvals)}/{p.required_approvals}" if p.required_approvals else "-",
            out.timestamp(p.last_updated_timestamp),
        )
    return table


def promotion_detail(promotion: Promotion, live: PromotionState | None, history: Sequence[StateChange]) -> Group:
    """Fields, the checklist with its numbers, the sign-offs and the history of one promotion."""
    status = str(live.status) if live is not None else promotion.status
    message = (live.message if live is not None else "") or promotion.message
    required = live.required_approvals if live is not None else promotion.required_approvals
    approvals = live.approvals if live is not None else _approvals(promotion.approvals)
    deadline = _iso(live.deadline) if live is not None and live.deadline else (
        out.timestamp(promotion.deadline) if promotion.deadline else "-"
    )
    incumbent = live.incumbent_version if live is not None else promotion.incumbent_version
    fields = out.fields_table([
        ("Promotion", promotion.id),
        ("Model", promotion.model_name),
        ("Version", str(promotion.version)),
        ("Target", promotion.target_stage),
        ("Kind", promotion.kind),
        ("Status", status + (f" ({message})" if message else "")),
        ("Requester", promotion.requester),
        ("Justification", promotion.justification),
        ("Production was", f"v{incumbent}" if incumbent is not None else "-"),
        ("Sign-offs", f"{len(approvals)} of {required} ({promotion.approver_role})" if required else "none needed"),
        ("Deadline", deadline),
        ("Policy", (live.policy_hash if live is not None else promotion.policy_hash)[:12] or "-"),
        ("Workflow", promotion.workflow_id + ("" if live is not None else " (not running)")),
        ("Created", out.timestamp(promotion.creation_timestamp)),
        ("Updated", out.timestamp(promotion.last_updated_timestamp)),
    ])
    parts: list[Table] = [fields]
    checklist = live.checklist if live is not None and live.checklist is not None else _checklist(promotion.checklist)
    if checklist is not None:
        parts.append(checklist_table(checklist))
    if approvals:
        parts.append(approvals_table(approvals))
    if history:
        parts.append(history_table(history))
    return Group(*parts)


def checklist_table(checklist: Checklist) -> Table:
    """One row per check: pass/fail, reasons and the numbers behind the decision."""
    verdict = "[green]passed[/]" if checklist.passed else "[red]failed[/]"
    table = Table(title=f"Checklist: {verdict}", title_justify="left")
    table.add_column("Check", no_wrap=True)
    table.add_column("Result", no_wrap=True)
    table.add_column("Reasons", overflow="fold")
    table.add_column("Numbers", overflow="fold")
    for result in checklist.results:
        table.add_row(
            result.name, "[green]PASS[/]" if result.passed else "[red]FAIL[/]",
            escape("\n".join(result.reasons)) or "-", escape(_numbers(result)) or "-",
        )
    return table


def _numbers(result: CheckResult) -> str:
    return "\n".join(_number(n) for n in result.numbers)


def _number(number: Number) -> str:
    parts = [
        f"{name} {_num(value)}"
        for name, value in (("candidate", number.candidate), ("production", number.production),
                            ("threshold", number.threshold))
        if value is not None
    ]
    if number.delta is not None:
        parts.append(f"delta {number.delta:+.6g}")
    return f"{number.label}: {', '.join(parts)}" if parts else number.label


def _num(value: float) -> str:
    return f"{value:.6g}"


def approvals_table(approvals: Sequence[Approval]) -> Table:
    """One row per sign-off."""
    table = Table(title=f"{len(approvals)} sign-off(s)", title_justify="left")
    table.add_column("Approver", overflow="fold")
    table.add_column("Comment", overflow="fold")
    table.add_column("At", min_width=10)
    for approval in approvals:
        table.add_row(escape(approval.user), escape(approval.comment) or "-", _iso(approval.at))
    return table


def history_table(history: Sequence[StateChange]) -> Table:
    """The status changes of a promotion, oldest first."""
    table = Table(title="History", title_justify="left")
    table.add_column("At", min_width=10)
    table.add_column("Status", no_wrap=True)
    table.add_column("Note", overflow="fold")
    for change in history:
        table.add_row(_iso(change.at), str(change.status), escape(change.note) or "-")
    return table


def schema_table(model: str, schema: SignatureSchema) -> Table:
    """The inputs and outputs of a serving schema."""
    table = Table(title=f"Serving schema of {escape(model)}", title_justify="left")
    for column in ("Side", "Name", "Type", "Required"):
        table.add_column(column, overflow="fold")
    for side, fields in (("input", schema.inputs), ("output", schema.outputs)):
        for field in fields:
            table.add_row(side, escape(field.name) or "-", escape(field.type), "yes" if field.required else "no")
    return table


# --------------------------------------------------------------------------- read-model helpers


def _checklist(value: Any) -> Checklist | None:
    """The read model's checklist JSON as a Checklist (None when the checks have not run)."""
    if value is None:
        return None
    try:
        return Checklist.model_validate(value)
    except ValidationError:
        return None


def _approvals(values: Sequence[dict[str, Any]]) -> list[Approval]:
    approvals: list[Approval] = []
    for value in values:
        try:
            approvals.append(Approval.model_validate(value))
        except ValidationError:
            continue
    return approvals


def _audited_history(services: Services, actor: Actor, promotion: Promotion) -> list[StateChange]:
    """A finished promotion's status changes, from the audit log (the workflow no longer answers)."""
    events = services.registry.audit.list_audit_events(
        actor, model_name=promotion.model_name, limit=AUDIT_HISTORY_LIMIT, newest_first=True
    )
    history: list[StateChange] = []
    for event in reversed(events):
        change = _audited_change(event, promotion.id)
        if change is not None and (not history or history[-1].status != change.status or change.note):
            history.append(change)
    return history


def _audited_change(event: AuditEvent, promotion_id: str) -> StateChange | None:
    after = event.after if isinstance(event.after, dict) else {}
    if after.get("promotion") != promotion_id:
        return None
    at = datetime.fromtimestamp(event.timestamp / 1000, tz=UTC)
    if event.action == "request_promotion":
        return StateChange(at=at, status=PromotionStatus.RUNNING_CHECKS, note=f"requested by {event.actor}")
    if event.action == "promotion_state" and after.get("status") in PromotionStatus.__members__.values():
        note = after.get("message") if isinstance(after.get("message"), str) else ""
        return StateChange(at=at, status=PromotionStatus(after["status"]), note=note or "")
    return None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _one_line(text: str) -> str:
    return " ".join(text.split())
