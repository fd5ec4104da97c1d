"""``move_to_stage``: the one way a version changes stage, whether moved directly or by a promotion."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from registry_store.audit import Actor
from registry_store.context import RegistryContext
from registry_store.stages import ARCHIVED, PRODUCTION
from registry_store.tables import ModelVersionRow, RegisteredModelRow

__all__ = ["move_to_stage"]


def move_to_stage(
    context: RegistryContext,
    session: Session,
    actor: Actor,
    model: RegisteredModelRow,
    row: ModelVersionRow,
    target: str,
    *,
    now: int,
    archive_existing: bool = False,
    **facts: Any,
) -> list[int]:
    """Move ``row`` to ``target`` in the caller's transaction and audit it; returns the versions archived.

    Entering Production archives the incumbent whatever ``archive_existing`` says; ``archive_existing``
    also archives the other versions in ``target`` (MLflow's meaning). ``facts`` (break-glass, the
    promotion, its approvers) are recorded in the audit event, stamped ``now`` like the rows it changes
    (so the Production history's boundaries are the versions' own timestamps).
    """
    source_stage = row.current_stage
    archived = _archive_others(session, model, row, target, now) if target == PRODUCTION or archive_existing else []
    row.current_stage, row.last_updated_timestamp = target, now
    model.last_updated_timestamp = now
    session.add_all([row, model])
    session.flush()
    context.audit(session, actor, "transition_stage", model.name, row.version, before={"stage": source_stage},
                  after={"stage": target, "archived": archived, **facts}, timestamp=now)
    moved = {"name": model.name, "version": str(row.version), "from_stage": source_stage, "to_stage": target,
             "archived": [str(number) for number in archived], "actor": actor.name,
             **{key: value for key, value in facts.items() if key in ("break_glass", "promotion")}}
    context.publish(session, "model_version_stage.transitioned", model.name, moved)
    if facts.get("break_glass"):
        context.publish(session, "break_glass.used", model.name, {**moved, "action": "transition_stage"})
    return archived


def _archive_others(session: Session, model: RegisteredModelRow, row: ModelVersionRow, target: str, now: int
                    ) -> list[int]:
    others = session.exec(
        select(ModelVersionRow.version).where(
            col(ModelVersionRow.model_id) == model.id,
            col(ModelVersionRow.current_stage) == target,
            col(ModelVersionRow.id) != row.id,
        )
    ).all()
    if others:
        session.execute(
            update(ModelVersionRow)
            .where(
                col(ModelVersionRow.model_id) == model.id,
                col(ModelVersionRow.current_stage) == target,
                col(ModelVersionRow.id) != row.id,
            )
            .values(current_stage=ARCHIVED, last_updated_timestamp=now)
            .execution_options(synchronize_session=False)
        )
    return sorted(others)
