"""What the Stage dialog tells the user *before* they confirm: which versions get archived, and
whether the move is governed (a promotion request) or a break-glass.

Display only: ``RegistryService.transition_stage`` and ``open_promotion`` enforce the rules
and may still refuse. The rules mirrored here (README "Rules the registry enforces"):
entering Production archives the incumbent; ``archive_existing_versions`` archives the other
versions of the target stage (Staging/Production only); moving a version into or out of
Production directly needs admin (break-glass) — the promotion workflow is the normal path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from registry_store.entities import ModelVersion
from registry_store.service_promotions import ELIGIBLE_SOURCE_STAGES
from registry_store.stages import ARCHIVED, PRODUCTION, STAGING

__all__ = ["TARGETS", "TransitionPlan", "plan_transition"]

TARGETS = (STAGING, PRODUCTION, ARCHIVED)


@dataclass(frozen=True)
class TransitionPlan:
    """One Stage-menu entry of a version page."""

    target: str
    source: str
    governed: bool
    """Reaching the target is normally done through a promotion request."""
    break_glass: bool
    """A direct move needs admin and is recorded as break-glass."""
    archives: list[int]
    """Versions a direct move archives whatever the checkbox says (the Production incumbent)."""
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


def plan_transition(version: ModelVersion, versions: Sequence[ModelVersion], target: str) -> TransitionPlan:
    """The plan for moving ``version`` to ``target``, given all versions of the model."""
    others = sorted(v.version for v in versions if v.current_stage == target and v.version != version.version)
    into_or_out_of_production = PRODUCTION in (target, version.current_stage) and target != version.current_stage
    return TransitionPlan(
        target=target,
        source=version.current_stage,
        governed=target == PRODUCTION,
        break_glass=into_or_out_of_production,
        archives=others if target == PRODUCTION else [],
        may_archive=others if target == STAGING else [],
        promotion_allowed_from=sorted(ELIGIBLE_SOURCE_STAGES.get(("promotion", target), frozenset())),
    )
