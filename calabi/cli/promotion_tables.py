"""Rendering promotions: the list table, the detail view with checklist, sign-offs and history.

Works on the API's JSON: the read model as a ``dict`` (everything shown is in it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from rich.console import Group
from rich.markup import escape
from rich.table import Table

from calabi.cli import output as out
from policies.decisions import Approval
from policies.evidence import SignatureSchema
from policies.results import Checklist, CheckResult, Number
from policies.run_authorship import run_author_label
from workflows.models import StateChange

__all__ = [
    "approvals_table",
    "checklist_table",
    "history_table",
    "iso",
    "promotion_detail",
    "promotions_table",
    "read_approvals",
    "read_history",
    "schema_table",
]

Promotion = Mapping[str, Any]
"""A promotion's read model as the API returns it."""


def promotions_table(promotions: Sequence[Promotion]) -> Table:
    """One row per promotion."""
    table = Table(title=f"{len(promotions)} promotion(s)", title_justify="left")
    table.add_column("ID", no_wrap=True)
    for column in ("Model", "Version", "Target", "Kind", "Status", "Requester", "Sign-offs"):
        table.add_column(column, overflow="fold", no_wrap=column in ("Version", "Status"))
    table.add_column("Updated", min_width=10)
    for p in promotions:
        table.add_row(
            p["id"], escape(p["model_name"]), str(p["version"]), p["target_stage"], p["kind"], p["status"],
            escape(p["requester"]),
            f"{len(p['approvals'])}/{p['required_approvals']}" if p["required_approvals"] else "-",
            out.timestamp(p["last_updated_timestamp"]),
        )
    return table


CHECK_ERROR_NOTE = "a check could not be evaluated; the model was not judged: re-check once the cause is fixed"


def promotion_detail(promotion: Promotion, history: Sequence[StateChange]) -> Group:
    """Fields, the checklist with its numbers, the sign-offs and the history of one promotion."""
    status, message = promotion["status"], promotion["message"]
    if status == "check_error":
        message = f"{CHECK_ERROR_NOTE}: {message}" if message else CHECK_ERROR_NOTE
    required = promotion["required_approvals"]
    approvals = read_approvals(promotion["approvals"])
    deadline = out.timestamp(promotion["deadline"]) if promotion["deadline"] else "-"
    incumbent = promotion["incumbent_version"]
    fields = out.fields_table([
        ("Promotion", promotion["id"]),
        ("Model", promotion["model_name"]),
        ("Version", str(promotion["version"])),
        ("Target", promotion["target_stage"]),
        ("Kind", promotion["kind"]),
        ("Status", status + (f" ({message})" if message else "")),
        ("Requester", promotion["requester"]),
        ("Training run by", _run_author(promotion)),
        ("Risk tier", promotion.get("risk_tier") or "-"),
        ("Justification", promotion["justification"]),
        ("Production was", f"v{incumbent}" if incumbent is not None else "-"),
        ("Sign-offs", f"{len(approvals)} of {required} ({promotion['approver_role']})" if required else "none needed"),
        ("Deadline", deadline),
        ("Policy", promotion["policy_hash"][:12] or "-"),
        ("Workflow", promotion["workflow_id"] + ("" if promotion["live"] else " (finished)")),
        ("Created", out.timestamp(promotion["creation_timestamp"])),
        ("Updated", out.timestamp(promotion["last_updated_timestamp"])),
    ])
    parts: list[Table] = [fields]
    checklist = _checklist(promotion["checklist"])
    if checklist is not None:
        parts.append(checklist_table(checklist))
    if approvals:
        parts.append(approvals_table(approvals))
    if history:
        parts.append(history_table(history))
    return Group(*parts)


def _run_author(promotion: Promotion) -> str:
    """The training run's author and how Calabi knows it, e.g. "erin (verified by Calabi)"."""
    author = str(promotion.get("run_author") or "")
    basis = run_author_label(str(promotion.get("run_author_source") or ""))
    return f"{author} ({basis})" if author and basis else author or "-"


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
        table.add_row(escape(approval.user), escape(approval.comment) or "-", iso(approval.at))
    return table


def history_table(history: Sequence[StateChange]) -> Table:
    """The status changes of a promotion, oldest first."""
    table = Table(title="History", title_justify="left")
    table.add_column("At", min_width=10)
    table.add_column("Status", no_wrap=True)
    table.add_column("Note", overflow="fold")
    for change in history:
        table.add_row(iso(change.at), str(change.status), escape(change.note) or "-")
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


def _checklist(value: Any) -> Checklist | None:
    """The read model's checklist JSON as a Checklist (None when the checks have not run)."""
    if value is None:
        return None
    try:
        return Checklist.model_validate(value)
    except ValidationError:
        return None


def read_approvals(values: Sequence[Mapping[str, Any]]) -> list[Approval]:
    """The read model's sign-offs (malformed entries left out)."""
    found: list[Approval] = []
    for value in values:
        try:
            found.append(Approval.model_validate(value))
        except ValidationError:
            continue
    return found


def read_history(values: Sequence[Mapping[str, Any]]) -> list[StateChange]:
    """The read model's status history (malformed entries left out)."""
    found: list[StateChange] = []
    for value in values:
        try:
            found.append(StateChange.model_validate(value))
        except ValidationError:
            continue
    return found


def iso(moment: datetime) -> str:
    """A moment as UTC ``YYYY-MM-DD HH:MM:SSZ``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
