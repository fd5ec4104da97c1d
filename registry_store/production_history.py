"""ProductionHistory: which version was Production when, who moved it there and why, read from the audit log.

The audit log is the record: every move into or out of Production (a promotion's apply, an
admin's break-glass transition, deleting the Production version) is a ``transition_stage`` or
``delete_model_version`` event written in the transaction that made it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, or_
from sqlmodel import Session, col, select

from registry_store.audit import Actor, event_view
from registry_store.context import RegistryContext, ServiceBase
from registry_store.entities import AuditEvent, ProductionAt, ProductionHistory, ProductionStint
from registry_store.errors import NotFoundError
from registry_store.model_access import READ
from registry_store.reviews import ReviewService
from registry_store.stages import ARCHIVED, PRODUCTION
from registry_store.tables import AuditEventRow, ModelVersionRow
from registry_store.users import require_role
from registry_store.validation import parse_instant

__all__ = ["ProductionHistoryService", "as_dict", "production_stints", "promotion_requests"]

_ACTIONS = ("transition_stage", "delete_model_version", "request_promotion")
_END = 2**63 - 1


class ProductionHistoryService(ServiceBase):
    """The Production history of a model, the version in Production at an instant, and the rollback target."""

    def __init__(self, context: RegistryContext, reviews: ReviewService) -> None:
        super().__init__(context)
        self._reviews = reviews

    def production_history(self, actor: Actor, name: object) -> ProductionHistory:
        """Every period a version was Production, newest first (since the model was created; renames followed);
        a break-glass stint carries the post-implementation review its move opened, as it stands now."""
        require_role(actor, "viewer", "read the registry")
        model_name, events = self._events(actor, name)
        stints = production_stints(events)
        with self._db.read() as session:
            reviews = self._reviews.reviews_by_id(session, (s.review_id for s in stints if s.review_id is not None))
        return ProductionHistory(name=model_name, stints=[
            s.model_copy(update={"review": reviews.get(s.review_id)}) if s.review_id is not None else s
            for s in stints
        ])

    def production_at(self, actor: Actor, name: object, at: object) -> ProductionAt:
        """The version that was Production at ``at`` (epoch milliseconds or ISO-8601); a move at ``at`` counts."""
        require_role(actor, "viewer", "read the registry")
        instant = parse_instant(at)
        model_name, events = self._events(actor, name)
        stint = next((s for s in production_stints(events)
                      if s.since <= instant and (s.until is None or instant < s.until)), None)
        return ProductionAt(name=model_name, at=instant, version=stint.version if stint else None, stint=stint)

    def previous_production_version(self, actor: Actor, model: object) -> int:
        """The version that was in Production before the current one (the rollback target)."""
        require_role(actor, "viewer", "read the registry")
        model_name, events = self._events(actor, model)
        with self._db.read() as session:
            row = self._model(session, model_name, actor=actor, need=READ)
            stages = dict(session.exec(
                select(ModelVersionRow.version, ModelVersionRow.current_stage)
                .where(col(ModelVersionRow.model_id) == row.id)
            ).all())
        for stint in production_stints(events):
            if stages.get(stint.version) == ARCHIVED:
                return stint.version
        raise NotFoundError(f"{model_name} has no earlier Production version to roll back to.")

    def _events(self, actor: Actor, name: object) -> tuple[str, list[AuditEvent]]:
        """The model's name and its stage, deletion and request events since its creation, across renames."""
        with self._db.read() as session:
            model_name = self._model_record(session.connection(), name, actor=actor, need=READ).name
            periods = _lineage(session, model_name)
            rows = session.exec(
                select(AuditEventRow)
                .where(col(AuditEventRow.action).in_(_ACTIONS), or_(*(
                    and_(col(AuditEventRow.model_name) == named, col(AuditEventRow.seq) >= first,
                         col(AuditEventRow.seq) < end) for named, first, end in periods
                )))
                .order_by(col(AuditEventRow.seq))
            ).all()
        return model_name, [event_view(r) for r in rows]


def _lineage(session: Session, name: str) -> list[tuple[str, int, int]]:
    """The names the model had: ``(name, first seq, end seq)``, walking renames back to its creation.

    Events are recorded under the name at the time; a rename is recorded under the new name, so
    the name before it holds the events up to it, back to its own creation or rename.
    """
    periods: list[tuple[str, int, int]] = []
    end = _END
    while True:
        start = session.exec(
            select(AuditEventRow)
            .where(col(AuditEventRow.model_name) == name, col(AuditEventRow.seq) < end,
                   col(AuditEventRow.action).in_(("create_registered_model", "rename_registered_model")))
            .order_by(col(AuditEventRow.seq).desc()).limit(1)
        ).first()
        periods.append((name, start.seq if start is not None else 0, end))
        earlier = as_dict(json.loads(start.before)).get("name") if start is not None else None
        if start is None or start.action == "create_registered_model" or not isinstance(earlier, str):
            return periods
        name, end = earlier, start.seq


def as_dict(value: Any) -> dict[str, Any]:
    """An event's ``before`` or ``after`` as a dict (empty when it is anything else)."""
    return value if isinstance(value, dict) else {}


def promotion_requests(events: Sequence[AuditEvent]) -> dict[str, AuditEvent]:
    """The ``request_promotion`` event of each promotion id among ``events``."""
    return {str(as_dict(e.after).get("promotion")): e for e in events
            if e.action == "request_promotion" and as_dict(e.after).get("promotion")}


def production_stints(events: Sequence[AuditEvent]) -> list[ProductionStint]:
    """The Production periods the events (any order) record, newest first."""
    ordered = sorted(events, key=lambda e: e.seq)
    requests = promotion_requests(ordered)
    stints: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for event in ordered:
        before, after = as_dict(event.before), as_dict(event.after)
        leaving = (event.action == "transition_stage" and before.get("stage") == PRODUCTION
                   and after.get("stage") != PRODUCTION) or (
            event.action == "delete_model_version" and before.get("stage") == PRODUCTION)
        if leaving and current is not None and current["version"] == event.version:
            current.update(until=event.timestamp, ended_by=event.actor)
            current = None
        if event.action != "transition_stage" or after.get("stage") != PRODUCTION or event.version is None:
            continue
        if before.get("stage") == PRODUCTION:
            continue
        if current is not None:
            current.update(until=event.timestamp, ended_by=event.actor)
        promotion = str(after["promotion"]) if after.get("promotion") else None
        request = requests.get(promotion) if promotion else None
        current = {
            "version": event.version, "since": event.timestamp,
            "moved_by": request.actor if request is not None else event.actor,
            "why": str(as_dict(request.after).get("justification", "")) if request is not None
            else str(after.get("reason") or ""),
            "promotion": promotion, "approved_by": list(after.get("approved_by") or []),
            "break_glass": bool(after.get("break_glass")),
            "review_id": after["review"] if isinstance(after.get("review"), int) else None,
        }
        stints.append(current)
    return [ProductionStint(**stint) for stint in reversed(stints)]
