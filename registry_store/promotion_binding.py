"""What binds a promotion to its candidate: the version row, its digest and the evidence hash.

The registry's half of the rule "a sign-off is for the exact candidate and the evidence the
checks ran on": the evidence parts are recomputed from the rows inside the caller's
transaction, and whatever a live promotion is bound to cannot be deleted or renamed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import or_
from sqlmodel import Session, col, select

from policies.evidence import GOVERNANCE_TAGS, changed_parts, evidence_hash, evidence_parts
from policies.status import PromotionStatus
from registry_store.audit import Actor
from registry_store.context import RegistryContext
from registry_store.errors import InvalidStateError
from registry_store.tables import ModelVersionRow, ModelVersionTagRow, PromotionRow, ServingSchemaRow
from registry_store.users import require_role

__all__ = [
    "bind_evidence",
    "check_binding",
    "check_candidate",
    "check_governance_tag",
    "current_evidence",
    "evidence_changes",
    "refuse_if_promoting",
]


def refuse_if_promoting(session: Session, model_name: str, action: str, version: int | None = None) -> None:
    """Refuse ``action`` (409 naming the promotions) while a live promotion is bound to the model or version."""
    query = select(PromotionRow).where(col(PromotionRow.model_name) == model_name, col(PromotionRow.live))
    if version is not None:
        query = query.where(col(PromotionRow.version) == version)
    live = session.exec(query).all()
    if live:
        named = ", ".join(f"{p.id} (version {p.version} to {p.target_stage}, {p.status})" for p in live)
        raise InvalidStateError(
            f"Cannot {action} {model_name}{f' version {version}' if version is not None else ''}: "
            f"live promotion {named} is bound to it; cancel or finish it first."
        )


def current_evidence(
    session: Session, candidate: ModelVersionRow, *, tag_keys: Sequence[str], policy_hash: str
) -> dict[str, str]:
    """The candidate's evidence parts as the rows say now (tags: only ``tag_keys``)."""
    tags = {key: row.value for key in tag_keys
            if (row := session.get(ModelVersionTagRow, (candidate.id, key))) is not None}
    schema = session.get(ServingSchemaRow, candidate.model_id)
    metrics = json.loads(candidate.evidence).get("metrics")
    return evidence_parts(
        digest=candidate.digest, tags=tags, description=candidate.description,
        metrics=metrics if isinstance(metrics, dict) else {}, serving_schema=schema.signature if schema else "",
        policy_hash=policy_hash,
    )


def is_candidate(promotion: PromotionRow, candidate: ModelVersionRow) -> bool:
    """Whether ``candidate`` is the version row and digest the promotion was requested for (unbound: never)."""
    return candidate.id == promotion.candidate_id and candidate.digest == promotion.candidate_digest


def check_candidate(promotion: PromotionRow, candidate: ModelVersionRow) -> None:
    """Refuse (409 INVALID_STATE) a version that is not the promotion's candidate (same name and number or not)."""
    if not is_candidate(promotion, candidate):
        raise InvalidStateError(
            f"{promotion.model_name} version {promotion.version} is no longer the version promotion {promotion.id} "
            "was requested for."
        )


def evidence_changes(session: Session, promotion: PromotionRow, candidate: ModelVersionRow, policy_hash: str
                     ) -> list[str]:
    """What changed since the checks ran: ``candidate`` when the row or digest differ, else the changed parts."""
    if not is_candidate(promotion, candidate):
        return ["candidate"]
    recorded = json.loads(promotion.evidence)
    parts = recorded.get("parts")
    if not parts:  # checks not run yet (or a request from before the binding): nothing to compare
        return []
    return changed_parts(parts, current_evidence(session, candidate, tag_keys=recorded.get("tags", []),
                                                 policy_hash=policy_hash))


def check_binding(session: Session, promotion: PromotionRow, candidate: ModelVersionRow, policy_hash: str) -> None:
    """Refuse (409 INVALID_STATE) to apply a promotion whose candidate or evidence is not what the checks saw."""
    check_candidate(promotion, candidate)
    changed = evidence_changes(session, promotion, candidate, policy_hash)
    if changed:
        raise InvalidStateError(
            f"The evidence of {promotion.model_name} version {promotion.version} changed after the checks ran "
            f"({', '.join(changed)}); the sign-offs are void and the checks must run again."
        )


def bind_evidence(context: RegistryContext, session: Session, actor: Actor, promotion: PromotionRow,
                  candidate: ModelVersionRow, *, tag_keys: Sequence[str], policy_hash: str, run_author: str = "",
                  run_author_source: str = "", risk_tier: str | None = None) -> None:
    """Record the evidence the checks are about to run on, with the run's author (and how it is known) and the
    policy's risk tier (audited when any differs from the last binding)."""
    check_candidate(promotion, candidate)
    parts = current_evidence(session, candidate, tag_keys=tag_keys, policy_hash=policy_hash)
    digest = evidence_hash(parts)
    bound = (digest, run_author, run_author_source, risk_tier)
    if bound == (promotion.evidence_hash, promotion.run_author, promotion.run_author_source, promotion.risk_tier):
        return
    before = {"evidence_hash": promotion.evidence_hash, "run_author": promotion.run_author,
              "run_author_source": promotion.run_author_source, "risk_tier": promotion.risk_tier}
    promotion.evidence_hash, promotion.run_author, promotion.run_author_source, promotion.risk_tier = bound
    promotion.evidence = json.dumps({"parts": parts, "tags": sorted(tag_keys)}, sort_keys=True)
    session.add(promotion)
    context.audit(session, actor, "bind_promotion_evidence", promotion.model_name, promotion.version,
                  before=before, after={"promotion": promotion.id, "evidence_hash": digest, "run_author": run_author,
                                        "run_author_source": run_author_source, "risk_tier": risk_tier})


def check_governance_tag(session: Session, actor: Actor, version_id: int, key: str) -> bool:
    """Whether writing ``key`` is break-glass (admin only).

    Governance tags, and a tag the checks of a live or a successful promotion of this version read
    (the CI attestation): once checked, it stays what the sign-offs saw.
    """
    checked = session.exec(select(PromotionRow.evidence).where(
        col(PromotionRow.candidate_id) == version_id,
        or_(col(PromotionRow.live), col(PromotionRow.status) == PromotionStatus.PROMOTED),
    )).all()
    if key not in GOVERNANCE_TAGS and not any(key in json.loads(e).get("tags", []) for e in checked):
        return False
    require_role(actor, "admin", f"write the governance tag '{key}' (the promotion engine writes it; "
                                 "admins may break glass)")
    return True
