"""evaluate/run_check: the configured checks of a stage policy, in order, over one evidence."""

from __future__ import annotations

import math

import pytest

from policies.checklist import CHECK_NAMES, configured_checks, evaluate, run_check
from policies.evidence import Evidence, SchemaField, SignatureSchema, VersionEvidence
from policies.loading import load_policy
from policies.models import LeakageRule, PromotionPolicy, StagePolicy

SIGNATURE = SignatureSchema(inputs=[SchemaField(name="tenure", type="double"), SchemaField(name="plan", type="string")])
GOOD = VersionEvidence(
    version=3,
    stage="Staging",
    metrics={"auc": 0.91, "log_loss": 0.30},
    signature=SIGNATURE,
    feature_importances={"tenure": 0.45, "plan": 0.35, "age": 0.2},
    description="Training data 2024-01-01 to 2025-06-30. AUC 0.91.",
    tags={"ci.tests_passed": "true"},
)
PRODUCTION = VersionEvidence(
    version=2, stage="Production", metrics={"auc": 0.87, "log_loss": 0.31}, signature=SIGNATURE
)


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> PromotionPolicy:
    return load_policy(tmp_path_factory.mktemp("policies"), "churn").policy


def evidence(candidate: VersionEvidence = GOOD, incumbent: VersionEvidence | None = PRODUCTION) -> Evidence:
    return Evidence(
        model="churn", target_stage="Production", candidate=candidate, incumbent=incumbent, requester="carol"
    )


@pytest.mark.parametrize(
    ("target", "rollback", "checks"),
    [
        ("Production", False, ["tests", "metrics", "signature", "leakage", "description"]),
        ("production", False, ["tests", "metrics", "signature", "leakage", "description"]),
        ("Staging", False, ["tests", "signature"]),
        ("Production", True, []),
    ],
)
def test_default_policy_runs_the_configured_checks_in_order(
    policy: PromotionPolicy, target: str, rollback: bool, checks: list[str]
) -> None:
    checklist = evaluate(policy.for_target(target, rollback=rollback), evidence(), policy_hash="h")

    assert [r.name for r in checklist.results] == checks
    assert (checklist.passed, checklist.policy_hash) == (True, "h")


def test_unknown_target_stage_has_no_policy(policy: PromotionPolicy) -> None:
    with pytest.raises(ValueError, match="no promotion policy for target stage 'Archived'"):
        policy.for_target("Archived")


def test_one_failing_check_fails_the_checklist(policy: PromotionPolicy) -> None:
    worse = GOOD.model_copy(update={"metrics": {"auc": 0.85, "log_loss": 0.30}})

    checklist = evaluate(policy.production, evidence(worse), policy_hash="h")

    assert checklist.passed is False
    assert [r.name for r in checklist.results if not r.passed] == ["metrics"]
    metrics = checklist.result("metrics")
    assert metrics is not None and metrics.numbers[0].delta == -0.02


def test_disabled_and_missing_sections_are_skipped() -> None:
    stage = StagePolicy(leakage=LeakageRule(enabled=False))

    assert configured_checks(stage) == []
    assert evaluate(stage, evidence(), policy_hash="h").passed is True


@pytest.mark.parametrize("name", ["leakage", "bogus"])
def test_run_check_reports_unconfigured_checks(name: str) -> None:
    result = run_check(name, StagePolicy(), evidence())

    assert (result.passed, result.reasons) == (False, [f"check '{name}' is not configured in this policy"])


def test_check_names() -> None:
    assert CHECK_NAMES == ("tests", "metrics", "signature", "leakage", "description")


def test_first_production_passes_on_absolute_thresholds(policy: PromotionPolicy) -> None:
    checklist = evaluate(policy.production, evidence(incumbent=None), policy_hash="h")

    metrics = checklist.result("metrics")
    assert checklist.passed is True
    assert metrics is not None and [(n.label, n.candidate, n.threshold) for n in metrics.numbers] == [
        ("auc", 0.91, 0.7)
    ]


def test_evidence_and_results_with_non_finite_numbers_survive_json() -> None:
    odd = evidence(GOOD.model_copy(update={"metrics": {"auc": float("nan")}, "description": "AUC 1e999"}))
    stage = StagePolicy.model_validate({"description": {"required_metrics": ["auc"]}})
    checklist = evaluate(stage, odd, policy_hash="h")

    assert math.isnan(Evidence.model_validate_json(odd.model_dump_json()).candidate.metrics["auc"])  # not null
    assert type(checklist).model_validate_json(checklist.model_dump_json()) == checklist
    assert checklist.results[0].numbers[-1].candidate == float("inf")
