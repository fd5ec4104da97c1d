"""What the Stage dialog announces before a transition is confirmed."""

from __future__ import annotations

from registry_store.transition_plans import plan_transition

STAGES = {1: "Production", 2: "Staging", 3: "Staging", 4: "None"}


def test_moving_a_staging_version_to_production_is_governed_and_archives_the_incumbent() -> None:
    plan = plan_transition(2, STAGES, "Production")

    assert plan.governed and plan.break_glass and plan.archives == [1]
    assert plan.promotion_eligible


def test_a_version_outside_staging_cannot_be_promoted_to_production() -> None:
    assert not plan_transition(4, STAGES, "Production").promotion_eligible


def test_moving_to_staging_may_archive_the_other_staging_versions() -> None:
    plan = plan_transition(4, STAGES, "Staging")

    assert not plan.governed and not plan.break_glass and plan.may_archive == [2, 3]


def test_moving_out_of_production_is_break_glass_but_not_governed() -> None:
    plan = plan_transition(1, STAGES, "Archived")

    assert plan.break_glass and not plan.governed and plan.archives == []
