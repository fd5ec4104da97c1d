"""The promotion read model's rows: lookups, eligibility, the decision facts and the API view."""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import Session, col, select

from policies.decisions import Action, PromotionFacts, Signer, refusal
from policies.models import SignOffRule
from policies.status import PromotionStatus
from registry_store.audit import Actor
from registry_store.entities import Promotion
from registry_store.errors import InvalidParameterError, NotFoundError
from registry_store.model_access import visible_model_name
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
    "sign_off_rule",
]

# Which stage a candidate must be in to be promoted to a target, per kind of request.
ELIGIBLE_SOURCE_STAGES: dict[tuple[str, str], frozenset[str]] = {
    ("promotion", STAGING): frozenset({NONE, ARCHIVED}),
    ("promotion", PRODUCTION): frozenset({STAGING}),
    ("rollback", PRODUCTION): frozenset({ARCHIVED}),
}


def promotion_row(
    session: Session, promotion_id: object, *, lock: bool = False, reader: Actor | None = None
) -> PromotionRow:
    """The promotion row by id (locked for update with ``lock``), or NotFoundError; also when ``reader`` may
    not see its model (``model_access.py``)."""
    if not isinstance(promotion_id, str) or not promotion_id:
        raise InvalidParameterError("Missing value for required parameter 'promotion id'.")
    query = select(PromotionRow).where(col(PromotionRow.id) == promotion_id)
    if reader is not None:
        query = query.where(visible_model_name(reader, PromotionRow.model_name))
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
    return {k: json.loads(v) if k in _JSON_COLUMNS and isinstance(v, str) else v for k, v in values.items()}


_JSON_COLUMNS = frozenset({"checklist", "approvals", "sign_off", "history"})


def sign_off_rule(promotion: Promotion) -> SignOffRule | None:
    """The sign-off rule of the promotion's policy snapshot, as recorded (None: none needed, or no checks yet).

    Rows recorded before the rule was stored whole fall back to the mirrored approver columns.
    """
    if promotion.sign_off is not None:
        return SignOffRule.model_validate(promotion.sign_off)
    if promotion.required_approvals > 0:
        return SignOffRule(approvers=promotion.required_approvals, role=promotion.approver_role,
                           exclude_requester=promotion.exclude_requester)
    return None


def decision_facts(promotion: Promotion) -> PromotionFacts:
    """What the decision rules look at, all from the read model (signers with the groups they signed in)."""
    return PromotionFacts(status=PromotionStatus(promotion.status), requester=promotion.requester,
                          run_author=promotion.run_author, sign_off=sign_off_rule(promotion),
                          signers=[Signer(user=str(a.get("user", "")), groups=[str(g) for g in a.get("groups") or []])
                                   for a in promotion.approvals])


def may_sign_off(actor: Actor, promotion: Promotion) -> bool:
    """Whether ``actor`` may sign ``promotion`` off now, by the one decision rule and the recorded sign-off rule."""
    return refusal(Action.SIGN_OFF, user=actor.name, roles=actor.roles, groups=actor.groups,
                   promotion=decision_facts(promotion)) is None


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
        sign_off=json.loads(row.sign_off), history=json.loads(row.history),
        candidate_digest=row.candidate_digest, evidence_hash=row.evidence_hash, risk_tier=row.risk_tier,
        run_author=row.run_author, run_author_source=row.run_author_source, creation_timestamp=row.creation_timestamp,
        last_updated_timestamp=row.last_updated_timestamp,
    )
