"""Model evidence through the real engine: computed once per artifact, in the background at registration,
and judged honestly in a burst (real sklearn models, real sandboxed loaders, the time-skipping server).

Each expected leakage verdict is computed here from the fitted estimator itself (the ground truth),
so a verdict that came from a busy machine instead of the model fails the test.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from activities.importances import LOADER_VERSION
from policies.checks import SCALE_DEPENDENT, check_leakage
from policies.evidence import Evidence, VersionEvidence
from policies.importances import from_model_values
from policies.results import CheckResult
from policies.status import PromotionStatus
from registry_store.entities import ModelEvidence
from tests.workflows.conftest import WAIT_S, Harness, describe, wait_until
from tests.workflows.test_candidate_binding import Mlflow, mlflow, unreachable  # noqa: F401 (fixtures)
from workflows.model_evidence import evidence_workflow_id

S = PromotionStatus
FEATURES = ["tenure", "monthly_charges", "support_calls"]


def save_sklearn(h: Harness, estimator: Any, **save: Any) -> tuple[Path, Any]:
    """An sklearn model fitted on the harness's three features, saved with mlflow (no importance file)."""
    import mlflow.sklearn as mlflow_sklearn
    import pandas as pd
    from mlflow.models import infer_signature

    rows = [(float(i % 17), float((i * 7) % 23), i % 5) for i in range(80)]
    x = pd.DataFrame(rows, columns=FEATURES)
    y = [int(tenure < 8 and calls > 1 or charges > 19) for tenure, charges, calls in rows]
    estimator.fit(x, y)
    path = h.source_root / f"sk-{secrets.token_hex(4)}"
    mlflow_sklearn.save_model(estimator, str(path), signature=infer_signature(x), pip_requirements=["scikit-learn"],
                              **save)  # explicit requirements: no inference subprocess
    (path / "metrics.json").write_text(json.dumps({"auc": 0.91, "log_loss": 0.38}))
    return path, estimator


def candidate(h: Harness, source: Path) -> str:
    """A model whose v1 (importances recorded) is in Production and v2, from ``source``, in Staging."""
    name = f"churn-{secrets.token_hex(4)}"
    h.registry.models.create_registered_model(h.requester, name=name)
    h.add_version(name, auc=0.85, log_loss=0.40)
    h.registry.registration.create_model_version(
        h.requester, name=name, source=str(source), tags=[("ci.tests_passed", "true")],
        description=describe(0.91, 0.38))
    h.registry.stages.transition_stage(h.admin, name=name, version=1, stage="Production")
    h.registry.stages.transition_stage(h.requester, name=name, version=2, stage="Staging")
    return name


def stored(h: Harness, model: str, version: int = 2) -> ModelEvidence | None:
    digest = h.version(model, version).digest
    found: ModelEvidence | None = h.registry.model_evidence.get_model_evidence(
        h.viewer, digest, loader_version=LOADER_VERSION)
    return found


def expected_leakage(h: Harness, model: str, importances: dict[str, float]) -> CheckResult:
    """The verdict the policy gives these importances (comparable ones), computed here."""
    rule = h.stage_policy(model).leakage
    assert rule is not None
    return check_leakage(Evidence(model=model, target_stage="Production",
                                  candidate=VersionEvidence(version=2, feature_importances=importances)), rule)


async def leakage_of(h: Harness, model: str, status: PromotionStatus) -> CheckResult:
    """Request the promotion of v2 and wait for ``status``; its leakage result."""
    promotion = await h.request(model=model)
    state = await h.wait_for(promotion, status, timeout=3 * WAIT_S)
    assert state.checklist is not None
    result = state.checklist.result("leakage")
    assert result is not None
    return result


async def test_registration_computes_the_evidence_once_in_the_background(
    harness: Harness, mlflow: Mlflow, unreachable: Mlflow,  # noqa: F811
) -> None:
    from sklearn import linear_model, pipeline, preprocessing

    h = harness
    source, fitted = save_sklearn(h, pipeline.make_pipeline(preprocessing.StandardScaler(),
                                                            linear_model.LogisticRegression()))
    model = candidate(h, h.artifact(auc=0.91, log_loss=0.38))  # v2 with recorded importances; v3 registered below
    engineer = mlflow.token("engineer")

    body = {"name": model, "source": str(source), "description": describe(0.91, 0.38),
            "tags": [{"key": "ci.tests_passed", "value": "true"}]}
    response = await mlflow.call(engineer, "POST", "model-versions/create", body)

    assert response.status_code == 200, response.text
    await wait_until(lambda: stored(h, model, 3) is not None, "the evidence computed in the background")
    evidence = stored(h, model, 3)
    assert evidence is not None and (evidence.source, evidence.scale_dependent) == ("model", False)
    assert evidence.importances == pytest.approx(from_model_values(FEATURES, fitted[-1].coef_.tolist()))
    computed = h.client.get_workflow_handle(evidence_workflow_id(evidence.digest), result_type=str)
    assert await asyncio.wait_for(computed.result(), WAIT_S) == "model"
    [recorded] = [e for e in h.audit(model) if e.action == "record_model_evidence"]
    assert (recorded.version, recorded.after["digest"]) == (3, evidence.digest)
    assert h.activities is not None
    loads = h.activities.pool.jobs

    # The same artifact again, with Temporal unreachable from the API: registered all the same (201/200).
    again = await unreachable.call(engineer, "POST", "model-versions/create", body)
    assert again.status_code == 200, again.text
    h.registry.stages.transition_stage(h.requester, name=model, version=4, stage="Staging")

    promotion = await h.request(model=model, version=4)
    state = await h.wait_for(promotion, S.AWAITING_SIGN_OFF)

    assert state.checklist is not None
    leakage = state.checklist.result("leakage")
    assert leakage == expected_leakage(h, model, evidence.importances)
    assert h.activities.pool.jobs == loads, "v4 has v3's digest: its evidence was reused, no model loaded"
    assert [e.version for e in h.audit(model) if e.action == "record_model_evidence"] == [3]


async def test_a_burst_of_promotions_gets_every_leakage_verdict_right(harness: Harness) -> None:
    """8 promotions at once over 3 artifacts: comparable, scale-dependent and no importances at all.

    (Tree importances are covered by ``tests/integration/test_activities_promotion.py``: every artifact
    here costs a model load, the expensive part.)
    """
    from sklearn import linear_model, neighbors, pipeline, preprocessing

    h = harness
    scaled, scaled_fit = save_sklearn(h, pipeline.make_pipeline(preprocessing.StandardScaler(),
                                                                linear_model.LogisticRegression()))
    bare, _ = save_sklearn(h, linear_model.LogisticRegression())
    knn, _ = save_sklearn(h, neighbors.KNeighborsClassifier(algorithm="brute"))
    sources = [scaled, bare, knn] * 2 + [scaled, bare]
    models = [candidate(h, source) for source in sources]
    expected = {scaled: expected_leakage(h, models[0], from_model_values(FEATURES, scaled_fit[-1].coef_.tolist()))}
    expected[bare] = CheckResult(name="leakage", passed=True, reasons=[SCALE_DEPENDENT])
    expected[knn] = CheckResult(name="leakage", passed=False, reasons=[
        "no feature importances recorded (KNeighborsClassifier exposes neither feature_importances_ nor coef_)"])
    started = time.monotonic()

    results = await asyncio.gather(*(
        leakage_of(h, model, S.AWAITING_SIGN_OFF if expected[source].passed else S.CHECKS_FAILED)
        for model, source in zip(models, sources, strict=True)))

    wrong = [(source.name, got, expected[source]) for source, got in zip(sources, results, strict=True)
             if got != expected[source]]
    assert wrong == [], f"false verdicts after {time.monotonic() - started:.0f} s"
    assert {stored(h, model) is not None for model in models} == {True}
    assert h.activities is not None and h.activities.pool.jobs == 3, "one load per artifact, however many promotions"
