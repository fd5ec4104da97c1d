"""Presentation helpers: audit events as a readable timeline, signatures and checklists as tables.

Nothing here decides anything: it reshapes what the services returned for the templates.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from registry_store.entities import AuditEvent
from registry_store.production_history import as_dict, promotion_requests

__all__ = [
    "display_actor",
    "TimelineEntry",
    "signature_columns",
    "timeline",
]


@dataclass(frozen=True)
class TimelineEntry:
    """One line of a model's history."""

    at: int
    actor: str
    text: str
    why: str = ""
    version: int | None = None
    promotion: str | None = None
    kind: str = "change"


def display_actor(name: str) -> str:
    """Who did it, for people: the promotion workflow's technical actor name becomes 'promotion workflow'."""
    return "promotion workflow" if name.startswith("workflow:") else name


def _versions(values: Any) -> str:
    return ", ".join(f"v{v}" for v in values) if isinstance(values, list) else ""


def _entry(event: AuditEvent, requests: dict[str, AuditEvent]) -> TimelineEntry | None:
    before, after, v = as_dict(event.before), as_dict(event.after), event.version
    promotion = after.get("promotion")
    promotion_id = str(promotion) if promotion else None
    why = ""
    kind = "change"
    action = event.action
    if action == "create_registered_model":
        text = "created the model"
    elif action == "rename_registered_model":
        text = f"renamed the model from {before.get('name')} to {after.get('name')}"
    elif action == "update_registered_model":
        text, why = "edited the model description", str(after.get("description") or "")
    elif action == "delete_registered_model":
        text = "deleted the model"
    elif action in ("set_registered_model_tag", "set_model_version_tag"):
        pairs = ", ".join(f"{k} = {val}" for k, val in after.items())
        text = f"tagged version {v}: {pairs}" if action == "set_model_version_tag" else f"tagged the model: {pairs}"
    elif action in ("delete_registered_model_tag", "delete_model_version_tag"):
        keys = ", ".join(before)
        text = f"removed tag {keys} from version {v}" if action == "delete_model_version_tag" else \
            f"removed the model tag {keys}"
    elif action == "create_model_version":
        run = f" (run {after['run_id']})" if after.get("run_id") else ""
        text, kind = f"registered version {v} from {after.get('source', '?')}{run}", "register"
    elif action == "update_model_version":
        text, why = f"edited the description of version {v}", str(after.get("description") or "")
    elif action == "delete_model_version":
        text, kind = f"deleted version {v} (it was {before.get('stage', '?')})", "delete"
        if after.get("break_glass"):
            text += " — break-glass"
    elif action == "transition_stage":
        text, kind = f"moved version {v} from {before.get('stage', '?')} to {after.get('stage', '?')}", "stage"
        if after.get("archived"):
            text += f", archiving {_versions(after['archived'])}"
        if after.get("break_glass"):
            text += " — break-glass (admin, no promotion)"
            if after.get("review"):
                text += f"; post-implementation review {after['review']} opened"
            why = str(after.get("reason") or "")
        if promotion_id:
            approvers = ", ".join(after.get("approved_by") or [])
            request = requests.get(promotion_id)
            if request is not None:
                why = f"Requested by {request.actor}: {as_dict(request.after).get('justification', '')}"
            if approvers:
                why = f"{why} · approved by {approvers}" if why else f"Approved by {approvers}"
    elif action == "set_alias":
        old = before.get("version")
        text = f"pointed alias {after.get('alias')} at version {after.get('version', v)}"
        if old is not None:
            text += f" (was version {old})"
        if after.get("break_glass"):
            text += " — break-glass"
    elif action == "delete_alias":
        text = f"removed alias {before.get('alias')} (was version {before.get('version')})"
    elif action == "request_promotion":
        kind = "promotion"
        text = f"requested a {after.get('kind', 'promotion')} of version {v} to {after.get('target')}"
        why = str(after.get("justification") or "")
    elif action == "sign_off_promotion":
        text, kind, why = f"signed off the promotion of version {v}", "promotion", str(after.get("comment") or "")
    elif action == "promotion_state":
        status = after.get("status")
        if not status:
            return None
        text, kind = f"promotion of version {v}: {str(status).replace('_', ' ')}", "promotion-state"
        why = str(after.get("message") or "")
    elif action == "complete_review":
        text = f"completed post-implementation review {after.get('review')}: {after.get('outcome')}"
        why = str(after.get("note") or "")
    elif action == "escalate_review":
        text = f"post-implementation review {after.get('review')} is overdue: escalated to admins"
    elif action == "set_serving_schema":
        text = "set the serving schema"
    else:
        text = action.replace("_", " ") + (f" (version {v})" if v is not None else "")
    return TimelineEntry(at=event.timestamp, actor=event.actor, text=text, why=why, version=v,
                         promotion=promotion_id, kind=kind)


def timeline(events: Sequence[AuditEvent]) -> list[TimelineEntry]:
    """The events (any order) as readable entries, newest first."""
    ordered = sorted(events, key=lambda e: e.seq, reverse=True)
    requests = promotion_requests(ordered)
    return [entry for entry in (_entry(e, requests) for e in ordered) if entry is not None]


@dataclass(frozen=True)
class SignatureColumn:
    """One input or output of an MLflow signature."""

    name: str
    type: str
    required: bool


def signature_columns(signature: str) -> dict[str, list[SignatureColumn]]:
    """The inputs and outputs of an MLflow signature JSON (empty lists when absent or unreadable)."""
    found: dict[str, list[SignatureColumn]] = {"inputs": [], "outputs": []}
    try:
        document = json.loads(signature) if signature else {}
    except ValueError:
        return found
    if not isinstance(document, dict):
        return found
    for part in ("inputs", "outputs"):
        raw = document.get(part)
        try:
            specs = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            continue
        if not isinstance(specs, list):
            continue
        for index, spec in enumerate(specs):
            if isinstance(spec, dict):
                found[part].append(SignatureColumn(
                    name=str(spec.get("name", f"(unnamed {index + 1})")), type=str(spec.get("type", "?")),
                    required=bool(spec.get("required", True)),
                ))
    return found
