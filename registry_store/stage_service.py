"""StageService: direct stage transitions (Production needs admin: break-glass) and their previews."""

from __future__ import annotations

from sqlmodel import col, select

from registry_store.audit import Actor
from registry_store.context import ServiceBase
from registry_store.entities import ModelVersion
from registry_store.errors import InvalidParameterError
from registry_store.model_access import EDIT, READ
from registry_store.reviews import break_glass_rule, open_review
from registry_store.stage_moves import move_to_stage
from registry_store.stages import PRODUCTION, STAGING, canonical_stage, is_break_glass
from registry_store.tables import ModelVersionRow
from registry_store.transition_plans import TRANSITION_TARGETS, TransitionPlan, plan_transition
from registry_store.users import require_role
from registry_store.validation import parse_version, validate_reason
from registry_store.views import versions_views

__all__ = ["StageService"]


class StageService(ServiceBase):
    """Direct stage transitions (admins break glass for Production) and what they would do."""

    def transition_stage(
        self,
        actor: Actor,
        *,
        name: object,
        version: object,
        stage: object,
        archive_existing_versions: bool = False,
        reason: object = "",
    ) -> ModelVersion:
        """Move a version to a stage; entering Production archives the incumbent atomically.

        An admin's move into Production (break-glass) opens a post-implementation review in the same
        transaction, under the model's ``[production.break_glass]`` rule; ``reason`` is recorded with both.
        """
        require_role(actor, "engineer", "transition model versions")
        number = parse_version(version)
        target = canonical_stage(stage)
        why = validate_reason(reason)
        rule = (break_glass_rule(self.context.policy_dir, str(name))
                if target == PRODUCTION and "admin" in actor.roles else None)
        if archive_existing_versions and target not in (STAGING, PRODUCTION):
            raise InvalidParameterError(
                f"Model version transition cannot archive existing model versions because '{target}' "
                "is not an Active stage. Valid stages are Staging and Production."
            )
        with self._db.write() as session:
            model = self._model(session, name, actor=actor, need=EDIT, lock=True)
            row = self._version(session, model, number)
            break_glass = is_break_glass(row.current_stage, target)
            if break_glass:
                require_role(
                    actor,
                    "admin",
                    f"move a version {'into' if target == PRODUCTION else 'out of'} Production directly "
                    "(request a promotion instead; admins may break glass)",
                )
            now = self._clock()
            facts: dict[str, object] = {"break_glass": break_glass}
            if break_glass and why:
                facts["reason"] = why
            if break_glass and rule is not None and target == PRODUCTION:
                facts["review"] = open_review(session, actor, model_name=model.name,
                                              version=row.version, reason=why, rule=rule, now=now)
            move_to_stage(self.context, session, actor, model, row, target, now=now,
                          archive_existing=archive_existing_versions, **facts)
            return versions_views(session, [(row, model.name)], with_aliases=True)[0]

    def plan_transitions(self, actor: Actor, *, name: object, version: object) -> list[TransitionPlan]:
        """What moving a version to each other stage would do (for confirmation dialogs)."""
        require_role(actor, "viewer", "read the registry")
        number = parse_version(version)
        with self._db.read() as session:
            model = self._model(session, name, actor=actor, need=READ)
            row = self._version(session, model, number)
            stages = dict(session.exec(
                select(ModelVersionRow.version, ModelVersionRow.current_stage)
                .where(col(ModelVersionRow.model_id) == model.id)
            ).all())
        return [plan_transition(number, stages, target) for target in TRANSITION_TARGETS
                if target != row.current_stage]
