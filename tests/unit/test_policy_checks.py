"""The pure policy checks: every failure reason, the passing cases and their numbers."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest

from policies.checks import (
    SCALE_DEPENDENT,
    check_description,
    check_leakage,
    check_metrics,
    check_signature,
    check_tests,
    type_compatible,
)
from policies.evidence import Evidence, SchemaField, SignatureSchema, TestRun, VersionEvidence
from policies.models import DescriptionRule, Guardrail, LeakageRule, MetricsRule, SignatureRule, TestsRule
from policies.results import Number


def version(number: int = 3, **fields: Any) -> VersionEvidence:
    return VersionEvidence(version=number, **fields)


def evidence(candidate: VersionEvidence | None = None, **fields: Any) -> Evidence:
    return Evidence(
        model="churn", target_stage="Production", candidate=candidate or version(), requester="carol", **fields
    )


def schema(*fields: tuple[str, str] | tuple[str, str, bool]) -> SignatureSchema:
    return SignatureSchema(
        inputs=[SchemaField(name=f[0], type=f[1], required=f[2] if len(f) > 2 else True) for f in fields]
    )


# --- tests -----------------------------------------------------------------------------

ATTESTATION = TestsRule(mode="attestation", attestation_tag="ci.tests_passed")


@pytest.mark.parametrize(
    ("tags", "passed", "reasons"),
    [
        ({"ci.tests_passed": "true"}, True, []),
        ({"ci.tests_passed": " TRUE "}, True, []),
        ({}, False, ["candidate v3 has no 'ci.tests_passed' tag"]),
        ({"ci.tests_passed": "false"}, False, ["tag 'ci.tests_passed' is 'false', not 'true'"]),
        ({"ci.tests_passed": "yes"}, False, ["tag 'ci.tests_passed' is 'yes', not 'true'"]),
    ],
)
def test_tests_attestation(tags: dict[str, str], passed: bool, reasons: list[str]) -> None:
    result = check_tests(evidence(version(tags=tags)), ATTESTATION)

    assert (result.name, result.passed, result.reasons) == ("tests", passed, reasons)


COMMAND = TestsRule(mode="command", command=["pytest", "{artifact_dir}/tests"], timeout_s=600)


@pytest.mark.parametrize(
    ("run", "passed", "reasons"),
    [
        (TestRun(exit_code=0, passed=42, failed=0, duration_s=12.5), True, []),
        (None, False, ["no test run recorded for the candidate"]),
        (TestRun(exit_code=None, timed_out=True, duration_s=600), False, ["test command timed out after 600s"]),
        (TestRun(exit_code=None), False, ["test command did not report an exit code"]),
        (TestRun(exit_code=2, passed=0), False, ["test command exited with code 2"]),
        (TestRun(exit_code=1, passed=40, failed=2), False, ["test command exited with code 1", "2 tests failed"]),
        (TestRun(exit_code=0, passed=40, failed=1), False, ["1 test failed"]),
    ],
)
def test_tests_command(run: TestRun | None, passed: bool, reasons: list[str]) -> None:
    result = check_tests(evidence(test_run=run), COMMAND)

    assert (result.passed, result.reasons) == (passed, reasons)


def test_tests_command_numbers() -> None:
    run = TestRun(exit_code=1, passed=40, failed=2, duration_s=12.5)

    numbers = check_tests(evidence(test_run=run), COMMAND).numbers

    assert numbers == [
        Number(label="exit_code", candidate=1, threshold=0, delta=1),
        Number(label="failed", candidate=2, threshold=0, delta=2),
        Number(label="passed", candidate=40),
        Number(label="duration_s", candidate=12.5, threshold=600, delta=-587.5),
    ]


def test_command_placeholder_is_substituted_literally() -> None:
    rule = TestsRule(mode="command", command=["pytest", "{artifact_dir}/tests", "-k", "{not_a_placeholder}"])

    assert rule.render_command("/tmp/a{b}") == ["pytest", "/tmp/a{b}/tests", "-k", "{not_a_placeholder}"]


# --- metrics ---------------------------------------------------------------------------

AUC = MetricsRule(primary="auc", direction="maximize", min_improvement=0.0)
AUC_BY_2 = MetricsRule(primary="auc", direction="maximize", min_improvement=0.02)
RMSE = MetricsRule(primary="rmse", direction="minimize")
GUARDED = MetricsRule(
    primary="auc",
    guardrails=[
        Guardrail(metric="log_loss", direction="minimize", tolerance=0.02),
        Guardrail(metric="precision", direction="maximize", tolerance=0.01),
    ],
)


@pytest.mark.parametrize(
    ("rule", "candidate", "production", "passed", "reasons", "numbers"),
    [
        (
            AUC,
            {"auc": 0.91},
            {"auc": 0.87},
            True,
            [],
            [Number(label="auc", candidate=0.91, production=0.87, threshold=0.0, delta=0.04)],
        ),
        (
            AUC,
            {"auc": 0.87},
            {"auc": 0.87},
            False,
            ["auc 0.87 does not beat Production v2 (0.87) (maximize; change +0)"],
            [Number(label="auc", candidate=0.87, production=0.87, threshold=0.0, delta=0.0)],
        ),
        (
            AUC,
            {"auc": 0.85},
            {"auc": 0.87},
            False,
            ["auc 0.85 does not beat Production v2 (0.87) (maximize; change -0.02)"],
            [Number(label="auc", candidate=0.85, production=0.87, threshold=0.0, delta=-0.02)],
        ),
        (
            AUC_BY_2,
            {"auc": 0.88},
            {"auc": 0.87},
            False,
            ["auc 0.88 does not beat Production v2 (0.87) by at least 0.02 (maximize; change +0.01)"],
            [Number(label="auc", candidate=0.88, production=0.87, threshold=0.02, delta=0.01)],
        ),
        (
            AUC_BY_2,
            {"auc": 0.89},
            {"auc": 0.87},
            True,
            [],
            [Number(label="auc", candidate=0.89, production=0.87, threshold=0.02, delta=0.02)],
        ),
        (
            RMSE,
            {"rmse": 0.30},
            {"rmse": 0.32},
            True,
            [],
            [Number(label="rmse", candidate=0.3, production=0.32, threshold=0.0, delta=-0.02)],
        ),
        (
            RMSE,
            {"rmse": 0.33},
            {"rmse": 0.32},
            False,
            ["rmse 0.33 does not beat Production v2 (0.32) (minimize; change +0.01)"],
            [Number(label="rmse", candidate=0.33, production=0.32, threshold=0.0, delta=0.01)],
        ),
        (AUC, {}, {"auc": 0.87}, False, ["candidate v3 has no 'auc' metric"], []),
        (AUC, {"auc": 0.9}, {}, False, ["Production v2 has no 'auc' metric"], []),
        (AUC, {"auc": math.nan}, {"auc": 0.87}, False, ["candidate v3 'auc' is nan, not a finite number"], []),
    ],
)
def test_metrics_against_production(
    rule: MetricsRule,
    candidate: dict[str, float],
    production: dict[str, float],
    passed: bool,
    reasons: list[str],
    numbers: list[Number],
) -> None:
    result = check_metrics(evidence(version(metrics=candidate), incumbent=version(2, metrics=production)), rule)

    assert (result.passed, result.reasons, result.numbers) == (passed, reasons, numbers)


@pytest.mark.parametrize(
    ("candidate", "passed", "reasons", "guardrail_numbers"),
    [
        (
            {"auc": 0.9, "log_loss": 0.32, "precision": 0.75},
            True,
            [],
            [
                Number(label="log_loss", candidate=0.32, production=0.30, threshold=0.02, delta=0.02),
                Number(label="precision", candidate=0.75, production=0.75, threshold=0.01, delta=0.0),
            ],
        ),
        (
            {"auc": 0.9, "log_loss": 0.33, "precision": 0.75},
            False,
            ["guardrail log_loss got worse by 0.03 (0.33 vs Production 0.3; minimize), beyond the tolerance 0.02"],
            [
                Number(label="log_loss", candidate=0.33, production=0.30, threshold=0.02, delta=0.03),
                Number(label="precision", candidate=0.75, production=0.75, threshold=0.01, delta=0.0),
            ],
        ),
        (
            {"auc": 0.9, "log_loss": 0.2, "precision": 0.7},
            False,
            ["guardrail precision got worse by 0.05 (0.7 vs Production 0.75; maximize), beyond the tolerance 0.01"],
            [
                Number(label="log_loss", candidate=0.2, production=0.30, threshold=0.02, delta=-0.1),
                Number(label="precision", candidate=0.7, production=0.75, threshold=0.01, delta=-0.05),
            ],
        ),
        (
            {"auc": 0.9, "precision": 0.75},
            False,
            ["candidate v3 has no 'log_loss' metric"],
            [Number(label="precision", candidate=0.75, production=0.75, threshold=0.01, delta=0.0)],
        ),
    ],
)
def test_metrics_guardrails(
    candidate: dict[str, float], passed: bool, reasons: list[str], guardrail_numbers: list[Number]
) -> None:
    production = version(2, metrics={"auc": 0.87, "log_loss": 0.30, "precision": 0.75})

    result = check_metrics(evidence(version(metrics=candidate), incumbent=production), GUARDED)

    assert (result.passed, result.reasons, result.numbers[1:]) == (passed, reasons, guardrail_numbers)


def test_guardrail_missing_on_production_fails() -> None:
    production = version(2, metrics={"auc": 0.87, "precision": 0.75})
    candidate = version(metrics={"auc": 0.9, "log_loss": 0.3, "precision": 0.75})

    result = check_metrics(evidence(candidate, incumbent=production), GUARDED)

    assert (result.passed, result.reasons) == (False, ["Production v2 has no 'log_loss' metric"])


FIRST = MetricsRule(
    primary="auc",
    guardrails=[Guardrail(metric="log_loss", direction="minimize", tolerance=0.02)],
    absolute_thresholds={"auc": 0.7, "log_loss": 0.5},
)


@pytest.mark.parametrize(
    ("rule", "candidate", "passed", "reasons", "numbers"),
    [
        (
            FIRST,
            {"auc": 0.75, "log_loss": 0.4},
            True,
            [],
            [
                Number(label="auc", candidate=0.75, threshold=0.7, delta=0.05),
                Number(label="log_loss", candidate=0.4, threshold=0.5, delta=-0.1),
            ],
        ),
        (
            FIRST,
            {"auc": 0.7, "log_loss": 0.5},
            True,
            [],
            [
                Number(label="auc", candidate=0.7, threshold=0.7, delta=0.0),
                Number(label="log_loss", candidate=0.5, threshold=0.5, delta=0.0),
            ],
        ),
        (
            FIRST,
            {"auc": 0.65, "log_loss": 0.4},
            False,
            ["auc 0.65 is below the minimum 0.7 for a first Production version"],
            [
                Number(label="auc", candidate=0.65, threshold=0.7, delta=-0.05),
                Number(label="log_loss", candidate=0.4, threshold=0.5, delta=-0.1),
            ],
        ),
        (
            FIRST,
            {"auc": 0.75, "log_loss": 0.6},
            False,
            ["log_loss 0.6 is above the maximum 0.5 for a first Production version"],
            [
                Number(label="auc", candidate=0.75, threshold=0.7, delta=0.05),
                Number(label="log_loss", candidate=0.6, threshold=0.5, delta=0.1),
            ],
        ),
        (
            FIRST,
            {"log_loss": 0.4},
            False,
            ["candidate v3 has no 'auc' metric"],
            [Number(label="log_loss", candidate=0.4, threshold=0.5, delta=-0.1)],
        ),
        (
            AUC,
            {"auc": 0.6},
            True,
            ["no Production version to compare against and no absolute thresholds configured"],
            [Number(label="auc", candidate=0.6)],
        ),
        (AUC, {}, False, ["candidate v3 has no 'auc' metric"], []),
    ],
)
def test_metrics_first_production_uses_absolute_thresholds_only(
    rule: MetricsRule, candidate: dict[str, float], passed: bool, reasons: list[str], numbers: list[Number]
) -> None:
    result = check_metrics(evidence(version(metrics=candidate), incumbent=None), rule)

    assert (result.passed, result.reasons, result.numbers) == (passed, reasons, numbers)


# --- signature -------------------------------------------------------------------------

SERVING = schema(("tenure", "double"), ("plan", "string"), ("age", "integer"), ("region", "string", False))
RULE = SignatureRule()
STRICT = SignatureRule(allow_extra_optional_inputs=False)
SAME = [("tenure", "double"), ("plan", "string"), ("age", "integer"), ("region", "string", False)]


@pytest.mark.parametrize(
    ("rule", "inputs", "passed", "reasons"),
    [
        (RULE, SAME, True, []),
        (RULE, [("tenure", "double"), ("plan", "string"), ("age", "long"), ("region", "string", False)], True, []),
        (RULE, [("tenure", "double"), ("plan", "string"), ("age", "double"), ("region", "string", False)], True, []),
        (RULE, [*SAME[:3], ("region", "string", False), ("promo", "string", False)], True, []),
        (
            RULE,
            SAME[:2] + SAME[3:],
            False,
            ["input 'age' (integer) in the serving schema is missing from the candidate signature"],
        ),
        (
            RULE,
            [("tenure", "integer"), *SAME[1:]],
            False,
            ["input 'tenure' is integer in the candidate but double in the serving schema"],
        ),
        (
            RULE,
            [SAME[0], ("plan", "long"), *SAME[2:]],
            False,
            ["input 'plan' is long in the candidate but string in the serving schema"],
        ),
        (
            RULE,
            [*SAME, ("discount", "double")],
            False,
            ["new required input 'discount' (double) is not sent according to the serving schema"],
        ),
        (
            STRICT,
            [*SAME, ("promo", "string", False)],
            False,
            ["new optional input 'promo' is not in the serving schema (extra optional inputs not allowed)"],
        ),
        (
            RULE,
            [*SAME[:3], ("region", "string")],
            False,
            ["input 'region' is required by the candidate but optional in the serving schema"],
        ),
    ],
)
def test_signature_against_serving_schema(
    rule: SignatureRule, inputs: list[tuple[str, str]], passed: bool, reasons: list[str]
) -> None:
    result = check_signature(evidence(version(signature=schema(*inputs)), serving_schema=SERVING), rule)

    assert (result.passed, result.reasons) == (passed, reasons)
    assert result.numbers == [Number(label="inputs", candidate=len(inputs), production=4, delta=len(inputs) - 4)]


def test_signature_missing_on_candidate_fails() -> None:
    result = check_signature(evidence(version(signature=None), serving_schema=SERVING), RULE)

    assert (result.passed, result.reasons) == (False, ["candidate v3 has no model signature"])


def test_signature_falls_back_to_the_production_signature() -> None:
    production = version(2, signature=schema(("tenure", "double"), ("plan", "string")))

    result = check_signature(evidence(version(signature=schema(("tenure", "double"))), incumbent=production), RULE)

    assert (result.passed, result.reasons) == (
        False,
        ["input 'plan' (string) in the Production v2 signature is missing from the candidate signature"],
    )


def test_serving_schema_wins_over_the_production_signature() -> None:
    production = version(2, signature=schema(("tenure", "double"), ("plan", "string")))
    serving = schema(("tenure", "double"))

    result = check_signature(
        evidence(version(signature=schema(("tenure", "double"))), incumbent=production, serving_schema=serving), RULE
    )

    assert (result.passed, result.reasons) == (True, [])


@pytest.mark.parametrize("incumbent", [None, version(2, signature=None)])
def test_signature_with_nothing_to_compare_passes_with_a_note(incumbent: VersionEvidence | None) -> None:
    result = check_signature(evidence(version(signature=schema(("tenure", "double"))), incumbent=incumbent), RULE)

    assert (result.passed, result.reasons) == (
        True,
        ["no serving schema and no Production signature to compare against"],
    )
    assert result.numbers == [Number(label="inputs", candidate=1)]


@pytest.mark.parametrize(
    ("serving", "candidate", "compatible"),
    [
        ("integer", "integer", True),
        ("integer", "long", True),
        ("integer", "float", True),
        ("integer", "double", True),
        ("long", "double", True),
        ("float", "double", True),
        ("double", "integer", False),
        ("double", "float", False),
        ("long", "integer", False),
        ("long", "float", False),
        ("string", "string", True),
        ("integer", "string", False),
        ("string", "binary", False),
        ("boolean", "integer", False),
        ("datetime", "string", False),
        ("array<string>", "array<string>", True),
        ("array<integer>", "array<long>", False),
        ("tensor<float64>[-1,4]", "tensor<float32>[-1,4]", False),
    ],
)
def test_type_compatibility_table(serving: str, candidate: str, compatible: bool) -> None:
    assert type_compatible(serving, candidate) is compatible


COLUMNS = json.dumps(
    {
        "inputs": json.dumps(
            [
                {"type": "double", "name": "tenure", "required": True},
                {"type": "string", "name": "plan", "required": False},
                {"type": "array", "items": {"type": "string"}, "name": "tags", "required": True},
                {"type": "object", "properties": {"b": {"type": "long"}, "a": {"type": "string"}}, "name": "o"},
                {"type": "map", "values": {"type": "double"}, "name": "m"},
            ]
        ),
        "outputs": json.dumps([{"type": "long", "required": True}]),
        "params": None,
    }
)
TENSORS = json.dumps(
    {
        "inputs": json.dumps([{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 4]}}]),
        "outputs": json.dumps([{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}, "name": "y"}]),
    }
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            COLUMNS,
            SignatureSchema(
                inputs=[
                    SchemaField(name="tenure", type="double"),
                    SchemaField(name="plan", type="string", required=False),
                    SchemaField(name="tags", type="array<string>"),
                    SchemaField(name="o", type="object<a:string,b:long>"),
                    SchemaField(name="m", type="map<double>"),
                ],
                outputs=[SchemaField(name="[0]", type="long")],
            ),
        ),
        (
            TENSORS,
            SignatureSchema(
                inputs=[SchemaField(name="[0]", type="tensor<float64>[-1,4]")],
                outputs=[SchemaField(name="y", type="tensor<int64>[-1]")],
            ),
        ),
        (
            json.dumps({"inputs": [{"type": "double", "name": "x"}], "outputs": None}),
            SignatureSchema(inputs=[SchemaField(name="x", type="double")]),
        ),
        ("", None),
        ("   ", None),
        (json.dumps({"outputs": "[]"}), None),
        (json.dumps({"inputs": None, "outputs": "[]"}), None),
    ],
)
def test_signature_from_mlflow_json(text: str, expected: SignatureSchema | None) -> None:
    assert SignatureSchema.from_mlflow_json(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "signature is not valid JSON"),
        ("[1, 2]", "signature must be a JSON object"),
        (json.dumps({"inputs": "[{]"}), "signature inputs is not valid JSON"),
        (json.dumps({"inputs": "{}"}), "signature inputs must be a list"),
        (json.dumps({"inputs": "[1]"}), "signature inputs[0] must be an object"),
        (json.dumps({"inputs": '[{"name": "x"}]'}), "signature inputs[0]: column spec without a type"),
        (json.dumps({"inputs": '[{"type": "tensor"}]'}), "signature inputs[0]: tensor spec without a dtype"),
    ],
)
def test_signature_from_mlflow_json_refuses_malformed_text(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        SignatureSchema.from_mlflow_json(text)


def test_tensor_signatures_compare_by_exact_type() -> None:
    tensors = SignatureSchema.from_mlflow_json(TENSORS)
    other = SignatureSchema(inputs=[SchemaField(name="[0]", type="tensor<float32>[-1,4]")])

    same = check_signature(evidence(version(signature=tensors), serving_schema=tensors), RULE)
    different = check_signature(evidence(version(signature=other), serving_schema=tensors), RULE)

    assert (same.passed, different.passed) == (True, False)
    assert different.reasons == [
        "input '[0]' is tensor<float32>[-1,4] in the candidate but tensor<float64>[-1,4] in the serving schema"
    ]


# --- leakage ---------------------------------------------------------------------------

LEAK = LeakageRule(
    max_feature_share=0.5, forbidden_patterns=["(?i)customer_id", "(?i)churn_label", "(?i)^(target|label)$"]
)


@pytest.mark.parametrize(
    ("importances", "passed", "reasons", "numbers"),
    [
        (
            {"tenure": 0.4, "plan": 0.35, "age": 0.25},
            True,
            [],
            [Number(label="tenure", candidate=0.4, threshold=0.5, delta=-0.1)],
        ),
        (
            {"tenure": 0.5, "plan": 0.5},
            True,
            [],
            [Number(label="plan", candidate=0.5, threshold=0.5, delta=0.0)],
        ),
        (
            {"tenure": 0.8, "plan": 0.2},
            False,
            ["feature 'tenure' has 80.0% of the total importance, above the maximum share 50.0%"],
            [Number(label="tenure", candidate=0.8, threshold=0.5, delta=0.3)],
        ),
        (
            {"tenure": -3.0, "plan": 1.0},
            False,
            ["feature 'tenure' has 75.0% of the total importance, above the maximum share 50.0%"],
            [Number(label="tenure", candidate=0.75, threshold=0.5, delta=0.25)],
        ),
        ({}, False, ["no feature importances recorded"], []),
        ({"tenure": 0.0, "plan": 0.0}, False, ["feature importances are all zero"], []),
        ({"tenure": math.inf, "plan": 1.0}, False, ["feature importance of 'tenure' is not a finite number"], []),
        (
            {"tenure": 0.3, "customer_id": 0.3, "retarget_count": 0.4},
            False,
            ["feature 'customer_id' matches the forbidden pattern '(?i)customer_id'"],
            [Number(label="retarget_count", candidate=0.4, threshold=0.5, delta=-0.1)],
        ),
        (
            {"tenure": 0.3, "Target": 0.3, "plan": 0.4},
            False,
            ["feature 'Target' matches the forbidden pattern '(?i)^(target|label)$'"],
            [Number(label="plan", candidate=0.4, threshold=0.5, delta=-0.1)],
        ),
    ],
)
def test_leakage(importances: dict[str, float], passed: bool, reasons: list[str], numbers: list[Number]) -> None:
    result = check_leakage(evidence(version(feature_importances=importances)), LEAK)

    assert (result.passed, result.reasons, result.numbers) == (passed, reasons, numbers)


def test_leakage_lists_every_dominant_feature() -> None:
    rule = LeakageRule(max_feature_share=0.3)

    result = check_leakage(evidence(version(feature_importances={"a": 0.4, "b": 0.35, "c": 0.25})), rule)

    assert [n.label for n in result.numbers] == ["a", "b"]
    assert len(result.reasons) == 2


def test_leakage_checks_signature_input_names_too() -> None:
    candidate = version(feature_importances={"tenure": 0.5, "plan": 0.5}, signature=schema(("churn_label", "long")))

    result = check_leakage(evidence(candidate), LEAK)

    assert (result.passed, result.reasons) == (
        False,
        ["feature 'churn_label' matches the forbidden pattern '(?i)churn_label'"],
    )


def test_leakage_does_not_compare_scale_dependent_importances_as_shares() -> None:
    """Raw coefficients of an unscaled linear model: one dominant coefficient is no leak, the result says why."""
    candidate = version(feature_importances={"tenure": 40.0, "plan": 0.1}, importances_source="model",
                        importances_scale_dependent=True)

    result = check_leakage(evidence(candidate), LEAK)

    assert (result.passed, result.reasons, result.numbers) == (True, [SCALE_DEPENDENT], [])
    assert "not compared as shares" in SCALE_DEPENDENT and "put a scaler in front" in SCALE_DEPENDENT


def test_scale_dependent_importances_still_meet_the_forbidden_names() -> None:
    candidate = version(feature_importances={"customer_id": 1.0, "plan": 0.1}, importances_scale_dependent=True)

    result = check_leakage(evidence(candidate), LEAK)

    assert not result.passed
    assert result.reasons == ["feature 'customer_id' matches the forbidden pattern '(?i)customer_id'", SCALE_DEPENDENT]


@pytest.mark.parametrize(
    ("when_unavailable", "passed", "reasons"),
    [
        ("fail", False, ["no feature importances recorded (KNeighborsClassifier exposes neither "
                         "feature_importances_ nor coef_)"]),
        ("not_applicable", True, ["not applicable: the model exposes no feature importances (KNeighborsClassifier "
                                  "exposes neither feature_importances_ nor coef_)"]),
    ],
)
def test_a_model_without_importances_gets_what_the_policy_says(
    when_unavailable: str, passed: bool, reasons: list[str]
) -> None:
    candidate = version(importances_source="none",
                        importances_note="KNeighborsClassifier exposes neither feature_importances_ nor coef_")
    rule = LEAK.model_copy(update={"when_unavailable": when_unavailable})

    result = check_leakage(evidence(candidate), rule)

    assert (result.passed, result.reasons, result.numbers) == (passed, reasons, [])


def test_not_applicable_still_refuses_a_forbidden_signature_input() -> None:
    candidate = version(importances_source="none", signature=schema(("customer_id", "long")))
    rule = LEAK.model_copy(update={"when_unavailable": "not_applicable"})

    result = check_leakage(evidence(candidate), rule)

    assert not result.passed
    assert result.reasons[0] == "feature 'customer_id' matches the forbidden pattern '(?i)customer_id'"


def test_when_unavailable_accepts_only_fail_or_not_applicable() -> None:
    with pytest.raises(ValueError, match="when_unavailable"):
        LeakageRule(when_unavailable="skip")  # type: ignore[arg-type]


# --- description -----------------------------------------------------------------------

DESC = DescriptionRule(require_date_range=True, required_metrics=["auc", "log_loss"])


@pytest.mark.parametrize(
    ("text", "passed", "reasons", "numbers"),
    [
        (
            "Trained on data from 2024-01-01 to 2025-06-30. AUC: 0.91, log loss = 0.31.",
            True,
            [],
            [
                Number(label="date_range_days", candidate=546),
                Number(label="auc", candidate=0.91),
                Number(label="log_loss", candidate=0.31),
            ],
        ),
        ("Data 2024-01-01 – 2025-06-30; auc 0.91; log_loss 0.3", True, [], None),
        ("Data 2024-01-01—2025-06-30; auc=0.91; log-loss: 0.3", True, [], None),
        ("Data 2024-01-01..2025-06-30; AUC (holdout) 0.91; log_loss of 0.3", True, [], None),
        ("Data between 2024-01-01 and 2025-06-30; auc is 0.91; log_loss was 0.3", True, [], None),
        ("Data 2024-01-01 … 2025-06-30; auc ≈ 0.91; log_loss 3e-1", True, [], None),
        (
            "",
            False,
            [
                "description is empty",
                "no training-data date range (e.g. '2024-01-01 to 2025-06-30') in the description",
                "key metric 'auc' with its value is not in the description",
                "key metric 'log_loss' with its value is not in the description",
            ],
            [],
        ),
        (
            "Trained in 2024. auc 0.9, log_loss 0.3",
            False,
            ["no training-data date range (e.g. '2024-01-01 to 2025-06-30') in the description"],
            None,
        ),
        (
            "Data 2025-06-30 to 2024-01-01. auc 0.9, log_loss 0.3",
            False,
            ["date range '2025-06-30 to 2024-01-01' ends before it starts"],
            None,
        ),
        (
            "Data 2024-13-01 to 2025-06-30. auc 0.9, log_loss 0.3",
            False,
            ["date range '2024-13-01 to 2025-06-30' is not made of valid calendar dates"],
            None,
        ),
        (
            "Data 2024-01-01 to 2025-06-30. AUC improved a lot; pr_auc 0.5, log_loss 0.3",
            False,
            ["key metric 'auc' with its value is not in the description"],
            None,
        ),
    ],
)
def test_description(text: str, passed: bool, reasons: list[str], numbers: list[Number] | None) -> None:
    result = check_description(evidence(version(description=text)), DESC)

    assert (result.passed, result.reasons) == (passed, reasons)
    if numbers is not None:
        assert result.numbers == numbers


def test_description_without_date_range_requirement() -> None:
    rule = DescriptionRule(require_date_range=False, required_metrics=["auc"])

    result = check_description(evidence(version(description="AUC 0.91")), rule)

    assert (result.passed, result.reasons, result.numbers) == (True, [], [Number(label="auc", candidate=0.91)])


# --- never raises ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "name"),
    [
        (check_tests, "tests"),
        (check_metrics, "metrics"),
        (check_signature, "signature"),
        (check_leakage, "leakage"),
        (check_description, "description"),
    ],
)
def test_checks_report_instead_of_raising(check: Any, name: str) -> None:
    broken = evidence(version(signature=schema(("x", "double", False))), serving_schema=schema(("y", "double")))

    result = check(broken, object())

    assert result.name == name
    assert result.passed is False
    assert result.reasons[0].startswith("check failed to run: AttributeError")
