"""What a stage transition would do, told before it is confirmed (the rules are those of transition_stage)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from registry_store.promotion_rows import ELIGIBLE_SOURCE_STAGES
from registry_store.stages import ARCHIVED, PRODUCTION, STAGING, is_break_glass

__all__ = ["TRANSITION_TARGETS", "TransitionPlan", "plan_transition"]

TRANSITION_TARGETS = (STAGING, PRODUCTION, ARCHIVED)


class TransitionPlan(BaseModel):
    """One possible move of a version and its consequences."""

    model_config = ConfigDict(frozen=True)

    target: str
    source: str
    governed: bool
    """Reaching the target is normally done through a promotion request."""
    break_glass: bool
    """A direct move needs admin and is recorded as break-glass."""
    archives: list[int]
    """Versions a direct move archives whatever 'archive existing versions' says (the Production incumbent)."""
    may_archive: list[int]
    """Other versions in the target stage that 'archive existing versions' would archive."""
    promotion_allowed_from: list[str]
    """The stages a promotion to the target may start from (empty: no promotion to this target)."""

    @property
    def slug(self) -> str:
        """A lower-case id for element ids and URLs."""
        return self.target.lower()

    @property
    def promotion_eligible(self) -> bool:
        """Whether the version's current stage allows a promotion request to the target."""
        return self.source in self.promotion_allowed_from


def plan_transition(version: int, stages: Mapping[int, str], target: str) -> TransitionPlan:
    """The plan for moving ``version`` to ``target``, given every version's stage."""
    source = stages[version]
    others = sorted(v for v, stage in stages.items() if stage == target and v != version)
    return TransitionPlan(
        target=target, source=source, governed=target == PRODUCTION, break_glass=is_break_glass(source, target),
        archives=others if target == PRODUCTION else [], may_archive=others if target == STAGING else [],
        promotion_allowed_from=sorted(ELIGIBLE_SOURCE_STAGES.get(("promotion", target), frozenset())),
    )
