"""The promotion read model's rows: lookups, eligibility, the decision facts and the API view."""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import Session, col, select

from policies.decisions import Action, PromotionFacts, refusal
from policies.models import SignOffRule
from policies.status import PromotionStatus
from registry_store.audit import Actor
from registry_store.entities import Promotion
from registry_store.errors import InvalidParameterError, NotFoundError
from registry_store.stages import ARCHIVED, NONE, PRODUCTION, STAGING
from registry_store.tables import ModelVersionRow, PromotionRow, RegisteredModelRow

__all__ = [
    "ELIGIBLE_SOURCE_STAGES",
    "check_eligible",
    "decision_facts",
    "loggable",
    "may_sign_off",
    "production_version",
    "promotion_row",
    "promotion_view",
]

# Which stage a candidate must be in to be promoted to a target, per kind of request.
ELIGIBLE_SOURCE_STAGES: dict[tuple[str, str], frozenset[str]] = {
    ("promotion", STAGING): frozenset({NONE, ARCHIVED}),
    ("promotion", PRODUCTION): frozenset({STAGING}),
    ("rollback", PRODUCTION): frozenset({ARCHIVED}),
}


def promotion_row(session: Session, promotion_id: object, *, lock: bool = False) -> PromotionRow:
    """The promotion row by id (locked for update with ``lock``), or NotFoundError."""
    if not isinstance(promotion_id, str) or not promotion_id:
        raise InvalidParameterError("Missing value for required parameter 'promotion id'.")
    query = select(PromotionRow).where(col(PromotionRow.id) == promotion_id)
    row = session.exec(query.with_for_update() if lock else query).first()
    if row is None:
        raise NotFoundError(f"Promotion {promotion_id} not found.")
    return row


def production_version(session: Session, model: RegisteredModelRow) -> int | None:
    """The model's Production version number, if any."""
    return session.exec(
        select(ModelVersionRow.version).where(
            col(ModelVersionRow.model_id) == model.id, col(ModelVersionRow.current_stage) == PRODUCTION
        )
    ).first()


def check_eligible(candidate: ModelVersionRow, target: str, eligible: frozenset[str], kind: str) -> None:
    """Refuse a candidate whose stage is not one a promotion of ``kind`` to ``target`` starts from."""
    if candidate.current_stage not in eligible:
        raise InvalidParameterError(
            f"Version {candidate.version} is in {candidate.current_stage}; a {kind} to {target} needs a version "
            f"in {' or '.join(sorted(eligible))}."
        )


def loggable(values: dict[str, Any]) -> dict[str, Any]:
    """Read-model column values as the audit log records them (JSON columns decoded)."""
    return {k: json.loads(v) if k in ("checklist", "approvals") and isinstance(v, str) else v
            for k, v in values.items()}


def decision_facts(promotion: Promotion, sign_off: SignOffRule | None) -> PromotionFacts:
    """What the decision rules look at, from the read model and a sign-off rule."""
    return PromotionFacts(status=PromotionStatus(promotion.status), requester=promotion.requester, sign_off=sign_off,
                          approved_by=[str(a.get("user", "")) for a in promotion.approvals])


def may_sign_off(actor: Actor, promotion: Promotion) -> bool:
    """Whether ``actor`` may sign ``promotion`` off now, by the one decision rule and the mirrored sign-off rule."""
    rule = SignOffRule(approvers=promotion.required_approvals, role=promotion.approver_role,
                       exclude_requester=promotion.exclude_requester)
    facts = decision_facts(promotion, rule)
    return refusal(Action.SIGN_OFF, user=actor.name, roles=actor.roles, promotion=facts) is None


def promotion_view(row: PromotionRow) -> Promotion:
    """The API's view of a promotion row."""
    return Promotion(
        id=row.id, workflow_id=row.workflow_id, model_name=row.model_name, version=row.version,
        target_stage=row.target_stage, kind=row.kind, requester=row.requester, justification=row.justification,
        status=row.status, live=row.live, incumbent_version=row.incumbent_version,
        checklist=json.loads(row.checklist), approvals=json.loads(row.approvals),
        required_approvals=row.required_approvals, approver_role=row.approver_role,
        exclude_requester=row.exclude_requester, deadline=row.deadline,
        reminders_sent=row.reminders_sent, message=row.message, policy_hash=row.policy_hash,
        candidate_digest=row.candidate_digest, evidence_hash=row.evidence_hash,
        creation_timestamp=row.creation_timestamp, last_updated_timestamp=row.last_updated_timestamp,
    )
