"""PromotionActivities under ActivityEnvironment, against a real bootstrapped registry on SQLite.

Each test registers a model from tiny artifacts (an MLmodel with a signature, ``metrics.json``
and ``feature_importances.json``, which registration records into ``mv.evidence``), puts v1 in
Production and v2 in Staging, opens a promotion of v2 and calls the activities as the worker
would.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import LoaderPool, ModelEvidenceActivities, PromotionActivities
from activities.importances import LOADER_VERSION
from activities.notify import Notifier
from policies.checklist import configured_checks
from policies.checks import SCALE_DEPENDENT
from policies.decisions import Approval
from policies.evidence import TestRun
from policies.importances import from_model_values
from policies.loading import load_policy
from policies.models import TestsRule
from policies.results import Checklist
from policies.status import PromotionStatus as S
from registry_store.entities import ModelVersion, Promotion
from tests.integration.helpers import Registry, build_registry
from tests.integration.test_sandbox_escapes import hostile_model
from worker import build_activities
from workflows.models import (
    ApplyInput,
    CheckInput,
    EvidenceSnapshot,
    ModelEvidenceInput,
    NotifyInput,
    PromotionInput,
    PromotionState,
    RecordStateInput,
    SignOffRecord,
    StopReason,
)

REPO = Path(__file__).resolve().parents[2]
SIGNATURE = (
    "signature:\n"
    "  inputs: '[{\"type\": \"double\", \"name\": \"tenure\"}, {\"type\": \"double\", \"name\": \"monthly_charges\"},"
    " {\"type\": \"long\", \"name\": \"support_calls\"}]'\n"
    "  outputs: '[{\"type\": \"long\"}]'\n"
)
FEATURES = ["tenure", "monthly_charges", "support_calls"]
IMPORTANCES = {"tenure": 0.4, "monthly_charges": 0.35, "support_calls": 0.25}
DESCRIPTION = "Churn classifier trained on snapshots from 2024-01-01 to 2025-06-30; holdout auc {auc}."
POLICY = """
schema_version = 1

[production.tests]
mode = "attestation"
attestation_tag = "ci.tests_passed"

[production.metrics]
primary = "auc"
direction = "maximize"
absolute_thresholds = { auc = 0.7 }

[[production.metrics.guardrails]]
metric = "log_loss"
direction = "minimize"
tolerance = 0.02

[production.signature]
allow_extra_optional_inputs = true

[production.leakage]
max_feature_share = 0.6
forbidden_patterns = ['(?i)customer_id']

[production.description]
require_date_range = true
required_metrics = ["auc"]

[production.sign_off]
approvers = 1
role = "approver"

[staging.signature]
allow_extra_optional_inputs = true

[rollback.sign_off]
approvers = 1
"""
VALIDATED_ON = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)


@dataclass
class World:
    """A registry, the activities under test and helpers to set promotions up."""

    reg: Registry
    activities: PromotionActivities
    policy_dir: Path

    @property
    def svc(self) -> Any:
        return self.reg.svc

    def artifact(self, *, auc: float, log_loss: float = 0.4, importances: dict[str, float] | None = IMPORTANCES,
                 ) -> Path:
        path = self.reg.source_root / f"model-{secrets.token_hex(4)}"
        path.mkdir(parents=True)
        (path / "MLmodel").write_text("artifact_path: model\nflavors:\n  python_function: {}\n" + SIGNATURE)
        (path / "model.pkl").write_bytes(secrets.token_bytes(32))
        (path / "metrics.json").write_text(json.dumps({"auc": auc, "log_loss": log_loss}))
        if importances is not None:
            (path / "feature_importances.json").write_text(json.dumps(importances))
        return path

    def register(self, source: Path, model: str, *, auc: float) -> ModelVersion:
        version: ModelVersion = self.svc.registration.create_model_version(
            self.reg.engineer, name=model, source=str(source), tags=[("ci.tests_passed", "true")],
            description=DESCRIPTION.format(auc=auc))
        return version

    def model(self, *, candidate_auc: float = 0.91, candidate_log_loss: float = 0.38) -> str:
        """v1 (auc 0.85) in Production, v2 in Staging."""
        name = f"churn-{secrets.token_hex(4)}"
        self.svc.models.create_registered_model(self.reg.engineer, name=name)
        self.register(self.artifact(auc=0.85, log_loss=0.40), name, auc=0.85)
        self.register(self.artifact(auc=candidate_auc, log_loss=candidate_log_loss), name, auc=candidate_auc)
        self.svc.stages.transition_stage(self.reg.admin, name=name, version=1, stage="Production")
        self.svc.stages.transition_stage(self.reg.engineer, name=name, version=2, stage="Staging")
        return name

    def open(self, model: str, version: int = 2, target: str = "Production") -> Promotion:
        promotion: Promotion = self.svc.promotions.open_promotion(
            self.reg.engineer, model=model, version=version, target_stage=target, justification="beats Production")
        return promotion

    def request(self, promotion: Promotion) -> PromotionInput:
        return PromotionInput(promotion_id=promotion.id, model=promotion.model_name, version=promotion.version,
                              target_stage=promotion.target_stage, kind=promotion.kind, requester=promotion.requester)

    def version(self, model: str, number: int) -> ModelVersion:
        result: ModelVersion = self.svc.versions.get_model_version(self.reg.viewer, name=model, version=number)
        return result

    def events(self, model: str, action: str) -> list[Any]:
        return [e for e in self.svc.audit.list_audit_events(self.reg.viewer, model_name=model, limit=10_000)
                if e.action == action]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    reg = build_registry(tmp_path, f"sqlite:///{tmp_path / 'registry.db'}")
    policy_dir = tmp_path / "policies"
    (policy_dir / "models").mkdir(parents=True)
    (policy_dir / "default.toml").write_text(POLICY)
    activities = PromotionActivities(reg.svc, reg.services.artifacts, policy_dir, Notifier(reg.svc))
    yield World(reg=reg, activities=activities, policy_dir=policy_dir)
    reg.services.close()


def env_for(promotion: Promotion) -> ActivityEnvironment:
    """An activity environment whose workflow id is the promotion's (the audit actor's name).

    Each is a separately scheduled activity, with an id of its own (a notification event is one activity).
    """
    env = ActivityEnvironment()
    env.info = dataclasses.replace(ActivityEnvironment.default_info(), workflow_id=promotion.workflow_id,
                                   activity_id=secrets.token_hex(4))
    return env


def snapshot_of(w: World, promotion: Promotion) -> EvidenceSnapshot:
    snapshot: EvidenceSnapshot = env_for(promotion).run(w.activities.snapshot_evidence, w.request(promotion))
    return snapshot


def checklist_of(w: World, promotion: Promotion, snapshot: EvidenceSnapshot) -> Checklist:
    env = env_for(promotion)
    results = [env.run(w.activities.evaluate_check, CheckInput(name=name, snapshot=snapshot))
               for name in snapshot.checks]
    return Checklist.of(results, policy_hash=snapshot.policy_hash)


def state_of(promotion: Promotion, status: S, **changes: Any) -> PromotionState:
    return PromotionState(
        promotion_id=promotion.id, model=promotion.model_name, version=promotion.version,
        target_stage=promotion.target_stage, kind=promotion.kind, requester=promotion.requester, status=status,
        **changes)


# ------------------------------------------------------------------------------ snapshot, checks


def test_snapshot_holds_the_numbers_the_incumbent_and_the_policy(world: World) -> None:
    w = world
    model = w.model()
    promotion = w.open(model)

    snapshot = snapshot_of(w, promotion)

    policy = load_policy(w.policy_dir, model)
    candidate, incumbent = snapshot.evidence.candidate, snapshot.evidence.incumbent
    assert incumbent is not None
    assert (candidate.version, candidate.stage, incumbent.version, incumbent.stage) == (2, "Staging", 1, "Production")
    assert candidate.metrics == {"auc": 0.91, "log_loss": 0.38}
    assert incumbent.metrics == {"auc": 0.85, "log_loss": 0.40}
    assert candidate.feature_importances == IMPORTANCES
    assert candidate.signature is not None and [f.name for f in candidate.signature.inputs] == FEATURES
    assert candidate.tags == {"ci.tests_passed": "true"}
    assert candidate.description == DESCRIPTION.format(auc=0.91)
    assert candidate.digest == w.version(model, 2).digest != incumbent.digest
    assert snapshot.incumbent_version == 1
    assert snapshot.storage_location == w.version(model, 2).storage_location
    assert snapshot.policy == policy.policy.production and snapshot.policy_hash == policy.content_hash
    assert snapshot.checks == configured_checks(policy.policy.production) == [
        "tests", "metrics", "signature", "leakage", "description"]
    assert (snapshot.evidence.model, snapshot.evidence.target_stage, snapshot.evidence.requester) == (
        model, "Production", w.reg.engineer.name)
    assert snapshot.evidence.serving_schema is None


def test_snapshot_reads_the_serving_schema_and_staging_policy(world: World) -> None:
    w = world
    model = w.model()
    w.svc.schemas.set_serving_schema(w.reg.engineer, model=model, signature=json.dumps(
        {"inputs": json.dumps([{"type": "double", "name": "tenure"}]), "outputs": None}))
    w.svc.stages.transition_stage(w.reg.engineer, name=model, version=2, stage="Archived")

    snapshot = snapshot_of(w, w.open(model, target="Staging"))

    assert snapshot.checks == ["signature"]
    assert snapshot.evidence.serving_schema is not None
    assert [f.name for f in snapshot.evidence.serving_schema.inputs] == ["tenure"]
    assert snapshot.incumbent_version == 1  # Production, whatever the target


def test_metrics_check_passes_and_fails_as_the_numbers_say(world: World) -> None:
    w = world
    better = w.open(w.model(candidate_auc=0.91))
    worse = w.open(w.model(candidate_auc=0.80))

    evaluate = w.activities.evaluate_check
    passed = env_for(better).run(evaluate, CheckInput(name="metrics", snapshot=snapshot_of(w, better)))
    failed = env_for(worse).run(evaluate, CheckInput(name="metrics", snapshot=snapshot_of(w, worse)))

    assert passed.passed and (passed.numbers[0].label, passed.numbers[0].candidate, passed.numbers[0].production) == (
        "auc", 0.91, 0.85)
    assert not failed.passed
    assert any("auc 0.8 does not beat Production v1 (0.85)" in reason for reason in failed.reasons), failed.reasons
    assert checklist_of(w, better, snapshot_of(w, better)).passed


def test_tests_check_uses_the_test_run_it_is_given(world: World) -> None:
    w = world
    promotion = w.open(w.model())
    snapshot = snapshot_of(w, promotion)
    commanded = snapshot.model_copy(update={"policy": snapshot.policy.model_copy(
        update={"tests": TestsRule(mode="command", command=["pytest"], timeout_s=60)})})
    env = env_for(promotion)

    green = env.run(w.activities.evaluate_check, CheckInput(name="tests", snapshot=commanded,
                                                           test_run=TestRun(exit_code=0, passed=3)))
    red = env.run(w.activities.evaluate_check, CheckInput(name="tests", snapshot=commanded,
                                                         test_run=TestRun(exit_code=1, passed=2, failed=1)))
    missing = env.run(w.activities.evaluate_check, CheckInput(name="tests", snapshot=commanded))

    assert green.passed and not red.passed and not missing.passed
    assert "1 test failed" in red.reasons and "no test run recorded for the candidate" in missing.reasons


def test_a_broken_policy_is_a_non_retryable_policy_error(world: World) -> None:
    w = world
    model = w.model()
    (w.policy_dir / "models" / f"{model}.toml").write_text('[production.metrics]\ndirection = "sideways"\n')

    with pytest.raises(ApplicationError) as raised:
        snapshot_of(w, w.open(model))

    assert (raised.value.type, raised.value.non_retryable) == ("PolicyError", True)
    assert "production.metrics.direction" in raised.value.message


def test_a_missing_promotion_is_a_non_retryable_error(world: World) -> None:
    w = world
    promotion = w.open(w.model()).model_copy(update={"id": "0000000000000000"})

    with pytest.raises(ApplicationError) as raised:
        snapshot_of(w, promotion)

    assert (raised.value.type, raised.value.non_retryable) == ("RESOURCE_DOES_NOT_EXIST", True)


# ------------------------------------------------------------------------------ importances


def sklearn_artifact(w: World, estimator: Any, **save: Any) -> tuple[Path, Any]:
    """An sklearn model fitted on named columns and saved with mlflow (no importance file)."""
    import mlflow.sklearn as mlflow_sklearn
    import pandas as pd
    from mlflow.models import infer_signature

    rows = [(float(i % 17), float((i * 7) % 23), float(i % 5)) for i in range(60)]
    x = pd.DataFrame(rows, columns=FEATURES)
    y = [int(tenure < 8 and calls > 1) for tenure, _charges, calls in rows]
    estimator.fit(x, y)
    path = w.reg.source_root / f"sk-{secrets.token_hex(4)}"
    mlflow_sklearn.save_model(estimator, str(path), signature=infer_signature(x), pip_requirements=["scikit-learn"],
                              **save)  # explicit requirements: no inference subprocess
    (path / "metrics.json").write_text(json.dumps({"auc": 0.93, "log_loss": 0.35}))
    return path, estimator


def sklearn_model(w: World, estimator: Any, **save: Any) -> tuple[str, Any]:
    model = w.model()
    path, fitted = sklearn_artifact(w, estimator, **save)
    w.register(path, model, auc=0.93)
    w.svc.stages.transition_stage(w.reg.engineer, name=model, version=3, stage="Staging")
    return model, fitted


def test_importances_are_computed_from_an_sklearn_model(world: World) -> None:
    """Raw coefficients of a bare linear model are read, marked scale-dependent, and not judged as shares."""
    from sklearn import linear_model
    w = world
    model, fitted = sklearn_model(w, linear_model.LogisticRegression())
    assert "feature_importances" not in w.version(model, 3).evidence
    promotion = w.open(model, version=3)

    snapshot = snapshot_of(w, promotion)

    candidate = snapshot.evidence.candidate
    assert list(candidate.feature_importances) == FEATURES
    assert candidate.feature_importances == pytest.approx(from_model_values(FEATURES, fitted.coef_.tolist()))
    assert (candidate.importances_source, candidate.importances_scale_dependent) == ("model", True)
    leakage = env_for(promotion).run(w.activities.evaluate_check, CheckInput(name="leakage", snapshot=snapshot))
    assert (leakage.passed, leakage.reasons, leakage.numbers) == (True, [SCALE_DEPENDENT], [])


def test_importances_of_a_pipeline_come_from_its_last_step(world: World) -> None:
    from sklearn import ensemble, pipeline, preprocessing
    w = world
    model, fitted = sklearn_model(w, pipeline.make_pipeline(
        preprocessing.StandardScaler(), ensemble.RandomForestClassifier(n_estimators=5, random_state=0)),
        skops_trusted_types=["sklearn.tree._tree.Tree"])

    importances = snapshot_of(w, w.open(model, version=3)).evidence.candidate.feature_importances

    assert importances == pytest.approx(dict(zip(FEATURES, fitted[-1].feature_importances_.tolist(), strict=True)))


class Hostile:
    """Unpickling it runs code: reports the CALABI_* variables it can see on stderr, then kills its interpreter."""

    def __reduce__(self) -> tuple[Any, ...]:
        code = ("import os, sys; sys.stderr.write('seen=' + repr(sorted(k for k in os.environ"
                " if k.startswith('CALABI_')))); sys.stderr.flush(); os._exit(7)")
        return (exec, (code,))


def test_a_hostile_model_is_loaded_out_of_process(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model whose unpickling runs code and kills its interpreter: the worker survives, secrets stay out,
    and the snapshot fails MODEL_UNLOADABLE (not retried, nothing stored), never "no importances"."""
    import cloudpickle  # type: ignore[import-untyped]

    monkeypatch.setenv("CALABI_ADMIN_TOKEN", "do-not-leak")
    w = world
    model = w.model()
    path = w.reg.source_root / f"hostile-{secrets.token_hex(4)}"
    path.mkdir()
    (path / "MLmodel").write_text(
        "artifact_path: model\nflavors:\n  sklearn:\n    pickled_model: model.pkl\n"
        "    serialization_format: cloudpickle\n    sklearn_version: 1.0.0\n" + SIGNATURE)
    (path / "model.pkl").write_bytes(cloudpickle.dumps(Hostile()))
    (path / "metrics.json").write_text(json.dumps({"auc": 0.93, "log_loss": 0.35}))
    w.register(path, model, auc=0.93)
    w.svc.stages.transition_stage(w.reg.engineer, name=model, version=3, stage="Staging")

    with pytest.raises(ApplicationError) as raised:
        snapshot_of(w, w.open(model, version=3))

    assert (raised.value.type, raised.value.non_retryable) == ("MODEL_UNLOADABLE", True)
    assert "(exit 7): seen=[]" in raised.value.message, "loaded in the sandbox, without the registry's settings"
    digest = w.version(model, 3).digest
    assert w.svc.model_evidence.get_model_evidence(w.reg.viewer, digest, loader_version=LOADER_VERSION) is None


def test_a_model_that_sleeps_past_its_budget_is_retried_and_nothing_is_stored(world: World) -> None:
    """Time ran out (a busy machine looks the same): a retryable error, never an answer, and nothing stored."""
    w = world
    model = w.model()
    w.register(hostile_model(w.reg.source_root / "sleepy", "import time; time.sleep(120)"), model, auc=0.93)
    evidence = ModelEvidenceActivities(w.svc, w.reg.services.artifacts, LoaderPool(0, timeout_s=2))

    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(evidence.compute_model_evidence, ModelEvidenceInput(model=model, version=3))

    assert (raised.value.type, raised.value.non_retryable) == ("RESOURCE_EXHAUSTED", False)
    assert "took longer than 2s" in raised.value.message
    digest = w.version(model, 3).digest
    assert w.svc.model_evidence.get_model_evidence(w.reg.viewer, digest, loader_version=LOADER_VERSION) is None


def test_importances_are_not_computed_when_no_leakage_check_runs(world: World) -> None:
    from sklearn import linear_model
    w = world
    model, _ = sklearn_model(w, linear_model.LogisticRegression())
    w.svc.stages.transition_stage(w.reg.engineer, name=model, version=3, stage="Archived")

    snapshot = snapshot_of(w, w.open(model, version=3, target="Staging"))

    assert "leakage" not in snapshot.checks and snapshot.evidence.candidate.feature_importances == {}


def test_no_importances_anywhere_fails_the_leakage_check(world: World) -> None:
    w = world
    model = w.model()
    w.register(w.artifact(auc=0.93, importances=None), model, auc=0.93)
    w.svc.stages.transition_stage(w.reg.engineer, name=model, version=3, stage="Staging")
    promotion = w.open(model, version=3)

    snapshot = snapshot_of(w, promotion)
    leakage = env_for(promotion).run(w.activities.evaluate_check, CheckInput(name="leakage", snapshot=snapshot))

    assert snapshot.evidence.candidate.feature_importances == {}
    assert snapshot.evidence.candidate.importances_source == "none"
    assert not leakage.passed
    assert leakage.reasons == ["no feature importances recorded (not an sklearn model; its flavors: python_function)"]

    override = w.policy_dir / "models" / f"{model}.toml"
    override.write_text('[production.leakage]\nwhen_unavailable = "not_applicable"\n')
    snapshot = snapshot_of(w, promotion)
    leakage = env_for(promotion).run(w.activities.evaluate_check, CheckInput(name="leakage", snapshot=snapshot))

    assert leakage.passed
    assert leakage.reasons == ["not applicable: the model exposes no feature importances (not an sklearn model; "
                               "its flavors: python_function)"]


# ------------------------------------------------------------------------------ read model, sign-off


def test_record_state_updates_the_read_model_once(world: World) -> None:
    w = world
    model = w.model()
    promotion = w.open(model)
    snapshot = snapshot_of(w, promotion)
    checklist = checklist_of(w, promotion, snapshot)
    deadline = VALIDATED_ON + timedelta(days=7)
    state = state_of(promotion, S.AWAITING_SIGN_OFF, checklist=checklist, required_approvals=1,
                     approver_role="approver", deadline=deadline, reminders_sent=2, incumbent_version=1,
                     message="awaiting 1 sign-off(s)", policy_hash=snapshot.policy_hash)
    env = env_for(promotion)
    before = len(w.events(model, "promotion_state"))

    env.run(w.activities.record_state, RecordStateInput(state=state))
    after_first = w.reg.audit_count()
    env.run(w.activities.record_state, RecordStateInput(state=state))

    read = w.svc.promotions.get_promotion(w.reg.viewer, promotion.id)
    assert (read.status, read.live, read.required_approvals, read.approver_role) == (
        "awaiting_sign_off", True, 1, "approver")
    assert read.deadline == int(deadline.timestamp() * 1000)
    assert (read.reminders_sent, read.incumbent_version, read.message) == (2, 1, "awaiting 1 sign-off(s)")
    assert read.policy_hash == snapshot.policy_hash
    assert read.checklist == checklist.model_dump(mode="json") and read.checklist["passed"] is True
    assert w.reg.audit_count() == after_first, "the same state twice: one audit event"
    events = w.events(model, "promotion_state")
    assert len(events) == before + 1 and events[-1].actor == f"workflow:{promotion.workflow_id}"

    env.run(w.activities.record_state, RecordStateInput(state=state.model_copy(update={"status": S.EXPIRED})))
    expired = w.svc.promotions.get_promotion(w.reg.viewer, promotion.id)
    assert (expired.status, expired.live) == ("expired", False) and w.reg.audit_count() == after_first + 1


def test_record_sign_off_is_audited_under_the_approver(world: World) -> None:
    w = world
    model = w.model()
    promotion = w.open(model)
    approval = Approval(user=w.reg.approver.name, roles=["approver"], groups=["model-risk", "churn-leads"],
                        comment="numbers look right", at=VALIDATED_ON)
    record = SignOffRecord(promotion_id=promotion.id, approval=approval, approvals=[approval])
    env = env_for(promotion)

    env.run(w.activities.record_sign_off, record)
    count = w.reg.audit_count()
    env.run(w.activities.record_sign_off, record)

    [event] = w.events(model, "sign_off_promotion")
    assert event.actor == w.reg.approver.name
    assert event.after == {"promotion": promotion.id, "comment": "numbers look right", "roles": ["approver"],
                           "groups": ["churn-leads", "model-risk"], "at": "2026-01-15T09:30:00Z", "evidence_hash": ""}
    [recorded] = w.svc.promotions.get_promotion(w.reg.viewer, promotion.id).approvals
    assert (recorded["user"], recorded["groups"]) == (w.reg.approver.name, ["model-risk", "churn-leads"])
    assert w.reg.audit_count() == count


def test_a_state_record_before_the_sign_off_record_keeps_its_audit_event(world: World) -> None:
    """The workflow may record its state (holding a new approval) before it records that sign-off."""
    w = world
    model = w.model()
    promotion = w.open(model)
    approval = Approval(user=w.reg.approver.name, roles=["approver"], comment="during a reminder", at=VALIDATED_ON)
    env = env_for(promotion)

    env.run(w.activities.record_state, RecordStateInput(state=state_of(
        promotion, S.AWAITING_SIGN_OFF, approvals=[approval], reminders_sent=1)))
    env.run(w.activities.record_sign_off,
            SignOffRecord(promotion_id=promotion.id, approval=approval, approvals=[approval]))

    assert [e.actor for e in w.events(model, "sign_off_promotion")] == [w.reg.approver.name]
    assert [a["user"] for a in w.svc.promotions.get_promotion(w.reg.viewer,
                                                              promotion.id).approvals] == [w.reg.approver.name]


# ------------------------------------------------------------------------------ apply


def approved(w: World, model: str) -> tuple[Promotion, ApplyInput]:
    promotion = w.open(model)
    snapshot = snapshot_of(w, promotion)
    checklist = checklist_of(w, promotion, snapshot)
    assert checklist.passed, checklist
    env_for(promotion).run(w.activities.record_state, RecordStateInput(state=state_of(
        promotion, S.APPLYING, checklist=checklist, incumbent_version=snapshot.incumbent_version)))
    return promotion, ApplyInput(promotion_id=promotion.id, expected_incumbent=snapshot.incumbent_version,
                                 approvers=[w.reg.approver.name], validated_on=VALIDATED_ON, checklist=checklist)


def test_apply_promotes_archives_moves_champion_and_signs_the_description(world: World) -> None:
    w = world
    model = w.model()
    promotion, apply = approved(w, model)
    env = env_for(promotion)

    env.run(w.activities.apply_promotion, apply)

    candidate, incumbent = w.version(model, 2), w.version(model, 1)
    assert (candidate.current_stage, incumbent.current_stage) == ("Production", "Archived")
    assert candidate.aliases == ["champion"]
    assert w.svc.aliases.get_version_by_alias(w.reg.viewer, name=model, alias="champion").version == 2
    assert candidate.description == (
        f"{DESCRIPTION.format(auc=0.91)}\n\nValidated by {w.reg.approver.name} on 2026-01-15 "
        f"(promotion {promotion.id}); auc 0.91 vs 0.85 (Production v1).")
    assert (candidate.tags["validated_by"], candidate.tags["validation_date"]) == (w.reg.approver.name, "2026-01-15")
    read = w.svc.promotions.get_promotion(w.reg.viewer, promotion.id)
    assert (read.status, read.live) == ("promoted", False)
    [transition] = [e for e in w.events(model, "transition_stage")
                    if e.version == 2 and e.after["stage"] == "Production"]
    assert transition.actor == f"workflow:{promotion.workflow_id}"
    assert transition.after["approved_by"] == [w.reg.approver.name] and transition.after["archived"] == [1]

    count = w.reg.audit_count()
    env.run(w.activities.apply_promotion, apply)  # a lost completion: the worker runs it again

    assert w.reg.audit_count() == count
    assert w.version(model, 2) == candidate
    assert w.svc.audit.verify_audit_chain(w.reg.viewer).ok


def test_apply_with_a_stale_incumbent_is_aborted(world: World) -> None:
    w = world
    model = w.model()
    promotion, apply = approved(w, model)
    w.register(w.artifact(auc=0.95), model, auc=0.95)
    w.svc.stages.transition_stage(w.reg.admin, name=model, version=3, stage="Production")  # break-glass meanwhile
    count = w.reg.audit_count()

    with pytest.raises(ApplicationError) as raised:
        env_for(promotion).run(w.activities.apply_promotion, apply)

    assert (raised.value.type, raised.value.non_retryable) == ("ABORTED", True)
    assert "Production of" in raised.value.message and "is version 3, not 1" in raised.value.message
    assert w.version(model, 2).current_stage == "Staging" and w.reg.audit_count() == count
    assert "validated_by" not in w.version(model, 2).tags


def test_apply_to_staging_leaves_the_description_and_production_alone(world: World) -> None:
    w = world
    model = w.model()
    w.svc.stages.transition_stage(w.reg.engineer, name=model, version=2, stage="Archived")
    promotion = w.open(model, target="Staging")
    env_for(promotion).run(w.activities.apply_promotion, ApplyInput(
        promotion_id=promotion.id, expected_incumbent=1, approvers=[], validated_on=VALIDATED_ON))

    candidate = w.version(model, 2)
    assert (candidate.current_stage, w.version(model, 1).current_stage) == ("Staging", "Production")
    assert candidate.description == DESCRIPTION.format(auc=0.91) and "validated_by" not in candidate.tags


# ------------------------------------------------------------------------------ notify


def notify(w: World, promotion: Promotion, kind: str, **changes: Any) -> str:
    status = {"awaiting": S.AWAITING_SIGN_OFF, "requested": S.RUNNING_CHECKS, "reminder": S.AWAITING_SIGN_OFF}
    state = state_of(promotion, status[kind] if kind in status else S(kind), **changes)
    env_for(promotion).run(w.activities.notify, NotifyInput(kind=kind, state=state))
    [latest, *_] = w.svc.notifications.list_notifications(w.reg.viewer, promotion_id=promotion.id)
    assert latest.kind == kind
    body: str = latest.body
    return body


def test_notifications_say_who_decided_and_why(world: World) -> None:
    w = world
    model = w.model()
    promotion = w.open(model)
    bob = Approval(user="bob", roles=["approver"], comment="fine", at=VALIDATED_ON)

    requested = notify(w, promotion, "requested", required_approvals=1)
    rejected = notify(w, promotion, "rejected", approvals=[bob], required_approvals=2,
                      stop=StopReason(status=S.REJECTED, by="carol", reason="guardrail too loose"))
    cancelled = notify(w, promotion, "cancelled", stop=StopReason(status=S.CANCELLED, by=w.reg.engineer.name))
    failed = notify(w, promotion, "failed",
                    stop=StopReason(status=S.FAILED, reason="apply failed: Version 2 is in Archived"))

    assert requested.startswith(f"[Calabi] {model} v2 → Production: promotion requested")
    assert "Justification: beats Production" in requested
    assert "was rejected by carol." in rejected and "Reason: guardrail too loose" in rejected
    assert "bob" not in rejected
    assert f"was cancelled by {w.reg.engineer.name}." in cancelled and "Reason" not in cancelled
    assert "failed and was not applied" in failed and "Reason: apply failed: Version 2 is in Archived" in failed


def test_promoted_notice_mentions_the_archived_version_only_for_production(world: World) -> None:
    w = world
    model = w.model()
    production = w.open(model)
    staging_model = w.model()
    w.svc.stages.transition_stage(w.reg.engineer, name=staging_model, version=2, stage="Archived")
    staging = w.open(staging_model, target="Staging")

    to_production = notify(w, production, "promoted", incumbent_version=1)
    to_staging = notify(w, staging, "promoted", incumbent_version=1)

    assert "The previous Production version 1 was archived." in to_production
    assert "was archived" not in to_staging


def test_notify_posts_the_state_and_refuses_unknown_kinds(world: World) -> None:
    w = world
    promotion = w.open(w.model())
    state = state_of(promotion, S.AWAITING_SIGN_OFF, required_approvals=1, deadline=VALIDATED_ON)

    env_for(promotion).run(w.activities.notify, NotifyInput(kind="awaiting", state=state))
    with pytest.raises(ApplicationError) as raised:
        env_for(promotion).run(w.activities.notify, NotifyInput(kind="paged", state=state))

    assert (raised.value.type, raised.value.non_retryable) == ("INVALID_PARAMETER_VALUE", True)
    [row] = w.svc.notifications.list_notifications(w.reg.viewer, promotion_id=promotion.id)
    assert "The request expires at 2026-01-15 09:30 UTC." in row.body


def test_build_activities_registers_every_activity_the_workflow_calls(world: World) -> None:
    from temporalio import activity

    built = build_activities(world.reg.services)
    light = {activity._Definition.must_from_callable(fn).name for fn in built.light}
    heavy = {activity._Definition.must_from_callable(fn).name for fn in built.heavy}

    called = {name for source in (REPO / "workflows").glob("*.py")
              for name in re.findall(r'execute_activity\(\s*"(\w+)"', source.read_text())}
    assert "remind_review" in called and "apply_promotion" in called  # the pattern finds the workflows' calls
    assert light | heavy == called and not light & heavy
    assert heavy == {"compute_model_evidence", "run_tests"}
    assert built.pool.size == world.reg.services.settings.loader_pool_size == 2
