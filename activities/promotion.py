"""PromotionActivities: thin adapters between the workflow and RegistryService / policies."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from temporalio import activity

from activities.errors import domain_errors
from activities.notify import Notifier
from policies.checklist import configured_checks, run_check
from policies.evidence import Evidence, SignatureSchema, VersionEvidence
from policies.importances import from_model_values
from policies.loading import load_policy
from policies.render import render_description, render_notification
from policies.results import Checklist, CheckResult
from registry_store.artifacts import ArtifactStore
from registry_store.audit import Actor
from registry_store.entities import ModelVersion
from registry_store.service import RegistryService
from registry_store.users import ROLES
from workflows.models import (
    ApplyInput,
    CheckInput,
    EvidenceSnapshot,
    NotifyInput,
    PromotionInput,
    PromotionState,
    RecordStateInput,
    SignOffRecord,
)

__all__ = ["PromotionActivities"]

log = logging.getLogger(__name__)


def _workflow_actor() -> Actor:
    """The audit actor of changes a promotion workflow makes (approvers are recorded with them)."""
    return Actor(name=f"workflow:{activity.info().workflow_id}", roles=frozenset(ROLES))


def _signature(text: str) -> SignatureSchema | None:
    try:
        return SignatureSchema.from_mlflow_json(text)
    except ValueError:
        return None


def _numbers(values: Any) -> dict[str, float]:
    if not isinstance(values, dict):
        return {}
    return {str(k): float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)}


class PromotionActivities:
    """The activities of PromotionWorkflow, bound to the registry, the artifact store and the policy dir."""

    def __init__(
        self, registry: RegistryService, artifacts: ArtifactStore, policy_dir: Path, notifier: Notifier
    ) -> None:
        self._registry = registry
        self._artifacts = artifacts
        self._policy_dir = policy_dir
        self._notifier = notifier

    @activity.defn(name="snapshot_evidence")
    @domain_errors
    def snapshot_evidence(self, request: PromotionInput) -> EvidenceSnapshot:
        """The candidate, the incumbent, the serving schema and the policy in force, as of now."""
        loaded = load_policy(self._policy_dir, request.model)
        policy = loaded.policy.for_target(request.target_stage, rollback=request.kind == "rollback")
        subject = self._registry.promotion_subject(_workflow_actor(), request.promotion_id)
        leakage = policy.leakage is not None and policy.leakage.enabled
        evidence = Evidence(
            model=request.model, target_stage=request.target_stage, requester=request.requester,
            candidate=self._version_evidence(subject.candidate, compute_importances=leakage),
            incumbent=self._version_evidence(subject.incumbent, compute_importances=False) if subject.incumbent
            else None,
            serving_schema=_signature(subject.serving_schema),
        )
        return EvidenceSnapshot(
            evidence=evidence, policy=policy, policy_hash=loaded.content_hash,
            incumbent_version=subject.incumbent.version if subject.incumbent else None,
            storage_location=subject.candidate.storage_location, checks=configured_checks(policy),
        )

    @activity.defn(name="evaluate_check")
    @domain_errors
    def evaluate_check(self, check: CheckInput) -> CheckResult:
        """Run one check of the policy over the snapshot (pure)."""
        evidence = check.snapshot.evidence.model_copy(update={"test_run": check.test_run})
        return run_check(check.name, check.snapshot.policy, evidence)

    @activity.defn(name="record_state")
    @domain_errors
    def record_state(self, record: RecordStateInput) -> None:
        """Mirror the workflow's state into the registry's read model (idempotent)."""
        state = record.state
        self._registry.record_promotion_state(
            _workflow_actor(), state.promotion_id, status=state.status,
            checklist=state.checklist.model_dump(mode="json") if state.checklist else None,
            approvals=[a.model_dump(mode="json") for a in state.approvals],
            required_approvals=state.required_approvals, approver_role=state.approver_role,
            deadline=int(state.deadline.timestamp() * 1000) if state.deadline else None,
            reminders_sent=state.reminders_sent, incumbent_version=state.incumbent_version,
            message=state.message, policy_hash=state.policy_hash or None,
        )

    @activity.defn(name="record_sign_off")
    @domain_errors
    def record_sign_off(self, record: SignOffRecord) -> None:
        """Audit one accepted sign-off under the approver's own name."""
        approval = record.approval
        self._registry.record_sign_off(
            Actor(name=approval.user, roles=frozenset(approval.roles)), record.promotion_id,
            approvals=[a.model_dump(mode="json") for a in record.approvals], comment=approval.comment,
        )

    @activity.defn(name="apply_promotion")
    @domain_errors
    def apply_promotion(self, apply: ApplyInput) -> None:
        """Perform the approved transition in one transaction (applying twice changes nothing)."""
        actor = _workflow_actor()
        promotion = self._registry.get_promotion(actor, apply.promotion_id)
        description = None
        if promotion.target_stage == "Production":
            candidate = self._registry.get_model_version(actor, name=promotion.model_name, version=promotion.version)
            metric = _primary_metric(apply.checklist)
            description = render_description(
                candidate.description, approvers=apply.approvers, validated_on=apply.validated_on.date(),
                promotion_id=promotion.id, primary_metric=metric[0], candidate_value=metric[1],
                incumbent_value=metric[2], incumbent_version=apply.expected_incumbent,
            )
        self._registry.apply_promotion(
            actor, apply.promotion_id, expected_incumbent=apply.expected_incumbent, description=description,
            approvers=apply.approvers, validation_date=apply.validated_on.date().isoformat(),
        )

    @activity.defn(name="notify")
    @domain_errors
    def notify(self, notify: NotifyInput) -> None:
        """Render the message for this moment of the promotion and deliver it."""
        state = notify.state
        text = render_notification(notify.kind, _context(state))  # type: ignore[arg-type]
        self._notifier.deliver(
            kind=notify.kind, promotion_id=state.promotion_id, model_name=state.model, text=text,
            state=state.model_dump(mode="json", include={"status", "version", "target_stage", "message"}),
        )

    def _version_evidence(self, mv: ModelVersion, *, compute_importances: bool) -> VersionEvidence:
        importances = _numbers(mv.evidence.get("feature_importances"))
        if not importances and compute_importances:
            importances = self._importances_from_model(mv)
        return VersionEvidence(
            version=mv.version, stage=mv.current_stage, metrics=_numbers(mv.evidence.get("metrics")),
            params={str(k): str(v) for k, v in (mv.evidence.get("params") or {}).items()},
            signature=_signature(mv.signature), feature_importances=importances, description=mv.description,
            tags=dict(mv.tags), digest=mv.digest,
        )

    def _importances_from_model(self, mv: ModelVersion) -> dict[str, float]:
        """``feature_importances_`` or ``coef_`` of an sklearn model (empty when that is impossible)."""
        if "sklearn" not in mv.evidence.get("flavors", []):
            return {}
        try:
            import mlflow.sklearn
        except ImportError:
            return {}
        try:
            with tempfile.TemporaryDirectory(prefix="calabi-importances-") as tmp:
                self._artifacts.download_tree(mv.storage_location, Path(tmp))
                model = mlflow.sklearn.load_model(tmp)
            estimator = model.steps[-1][1] if hasattr(model, "steps") else model
            values = getattr(estimator, "feature_importances_", None)
            if values is None:
                values = getattr(estimator, "coef_", None)
            names = getattr(model, "feature_names_in_", None)
            if values is None or names is None:
                return {}
            return from_model_values([str(n) for n in names], values.tolist())
        except Exception as exc:  # an unloadable model only means no importances; the check says so
            log.warning("could not compute feature importances of %s v%s: %s", mv.name, mv.version, exc)
            return {}


def _primary_metric(checklist: Checklist | None) -> tuple[str | None, float | None, float | None]:
    result = checklist.result("metrics") if checklist else None
    if result is None or not result.numbers:
        return None, None, None
    first = result.numbers[0]
    return first.label, first.candidate, first.production


def _context(state: PromotionState) -> dict[str, Any]:
    last = state.approvals[-1] if state.approvals else None
    return {
        "model": state.model, "version": state.version, "target_stage": state.target_stage,
        "promotion_id": state.promotion_id, "requester": state.requester, "role": state.approver_role,
        "approvals_needed": state.required_approvals, "approved_by": [a.user for a in state.approvals],
        "deadline": state.deadline, "actor": last.user if last else "", "comment": state.message,
        "results": state.checklist.results if state.checklist else [],
        "incumbent_version": state.incumbent_version,
    }
