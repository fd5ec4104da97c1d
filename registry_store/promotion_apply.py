"""The governed apply's writes: the stage move, ``champion``, the sign-off line and the governance tags."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session

from policies.status import PromotionStatus
from registry_store.audit import Actor
from registry_store.committed_events import status_since_ms
from registry_store.context import RegistryContext
from registry_store.promotion_events import publish_promotion
from registry_store.stage_moves import move_to_stage
from registry_store.stages import PRODUCTION
from registry_store.tables import (
    ModelVersionRow,
    ModelVersionTagRow,
    PromotionRow,
    RegisteredModelAliasRow,
    RegisteredModelRow,
)
from registry_store.validation import validate_description

__all__ = ["CHAMPION", "apply_transition"]

CHAMPION = "champion"


def apply_transition(
    context: RegistryContext, session: Session, actor: Actor, model: RegisteredModelRow, candidate: ModelVersionRow,
    promotion: PromotionRow, *, description: str | None, approvers: Sequence[str], validation_date: str,
) -> None:
    """Move the (already verified) candidate and record the promotion as done, in the caller's transaction."""
    now = context.clock()
    target = promotion.target_stage
    archived = move_to_stage(context, session, actor, model, candidate, target, now=now, break_glass=False,
                             promotion=promotion.id, approved_by=list(approvers))
    if target == PRODUCTION:
        assert model.id is not None and candidate.id is not None
        session.merge(RegisteredModelAliasRow(model_id=model.id, alias=CHAMPION, version_id=candidate.id))
        context.audit(session, actor, "set_alias", model.name, candidate.version,
                      after={"alias": CHAMPION, "version": candidate.version, "promotion": promotion.id})
        context.publish(session, "model_version_alias.created", model.name,
                        {"name": model.name, "alias": CHAMPION, "version": str(candidate.version)})
        if description is not None:
            text = validate_description(description)
            before, candidate.description = candidate.description, text
            session.add(candidate)
            context.audit(session, actor, "update_model_version", model.name, candidate.version,
                          before={"description": before}, after={"description": text})
        for key, value in (("validated_by", ", ".join(approvers)), ("validation_date", validation_date)):
            session.merge(ModelVersionTagRow(version_id=candidate.id, key=key, value=value))
            context.audit(session, actor, "set_model_version_tag", model.name, candidate.version, after={key: value})
            context.publish(session, "model_version_tag.set", model.name,
                            {"name": model.name, "version": str(candidate.version), "key": key, "value": value})
    since = status_since_ms(promotion.history, promotion.creation_timestamp)
    promotion.status, promotion.live = PromotionStatus.PROMOTED, False
    promotion.last_updated_timestamp = now
    session.add(promotion)
    context.audit(session, actor, "promotion_state", model.name, candidate.version, status_since_ms=since,
                  after={"promotion": promotion.id, "status": "promoted", "archived": archived})
    publish_promotion(context, session, promotion, "rolled_back" if promotion.kind == "rollback" else "promoted")
