"""PromotionActivities: thin adapters between PromotionWorkflow and RegistryService / policies.

Every method is a synchronous activity (the worker runs them in a thread pool) registered
under the name the workflow calls it by. Registry changes are made under the audit actor
``workflow:<workflow id>`` holding every role, except a sign-off, which is audited under
the approver. Domain errors leave as ``ApplicationError`` (see ``activities.errors``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

from temporalio import activity

from activities.errors import domain_errors
from activities.loader_pool import LoaderPool
from activities.model_evidence import ModelEvidenceActivities, evidence_actor, recorded_importances
from activities.notify import Notifier
from policies.checklist import configured_checks, run_check
from policies.errors import PolicyError
from policies.evidence import Evidence, SignatureSchema, VersionEvidence
from policies.loading import LoadedPolicy, load_policy
from policies.models import PromotionPolicy, StagePolicy
from policies.render import (
    NOTIFICATION_KINDS,
    NotificationContext,
    NotificationKind,
    render_description,
    render_notification,
)
from policies.results import Checklist, CheckResult, Number
from policies.run_authorship import RunAuthor
from policies.run_authorship import run_author as author_of_run
from registry_store.artifacts import ArtifactStore
from registry_store.artifacts.tracking_client import TrackingClient
from registry_store.audit import Actor
from registry_store.entities import ModelVersion
from registry_store.errors import InvalidParameterError, NotFoundError
from registry_store.service import RegistryService
from registry_store.stages import PRODUCTION, STAGING, canonical_stage
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

__all__ = ["PromotionActivities", "notification_event_key", "run_author", "workflow_actor"]

log = logging.getLogger(__name__)


def workflow_actor() -> Actor:
    """The audit actor of the changes the current promotion workflow makes (inside an activity)."""
    return evidence_actor()


def notification_event_key() -> str:
    """The notification event the current notify activity sends: its workflow run and activity id (kept by retries)."""
    info = activity.info()
    return f"{info.workflow_run_id}/{info.activity_id}"


def run_author(version: ModelVersion, tracking: TrackingClient | None) -> RunAuthor:
    """Who trained ``version`` and how Calabi knows (``policies.run_authorship.run_author``): the author the
    gateway stamped on its run, else the run's claimed user, else the user who registered it.

    A run the tracking server does not know (deleted, or logged elsewhere) falls back to the registering
    user; an unreachable tracking server raises (``UnavailableError``, retried): never "no author".
    """
    tags: dict[str, str] = {}
    user_id = ""
    if version.run_id and tracking is not None:
        try:
            run = tracking.get_run(version.run_id)
            tags, user_id = run.tags, run.user_id
        except NotFoundError:
            pass
    return author_of_run(tags, user_id, version.user_id)


def stage_policy(policy: PromotionPolicy, *, kind: str, target_stage: str) -> StagePolicy:
    """The stage policy for a request: ``rollback`` for a rollback, else by target stage."""
    if kind == "rollback":
        return policy.rollback
    stage = canonical_stage(target_stage)
    if stage == PRODUCTION:
        return policy.production
    if stage == STAGING:
        return policy.staging
    raise InvalidParameterError(f"No promotion policy for target stage '{target_stage}'.")


class PromotionActivities:
    """The activities of PromotionWorkflow, bound to the registry, the artifact store and the policy dir.

    ``evidence`` computes model evidence a snapshot finds missing (promotions started before the
    ``compute_model_evidence`` step existed); by default with cold loaders only. ``tracking`` is the
    tracking server a candidate's run author is read from (None: none configured).
    """

    def __init__(
        self, registry: RegistryService, artifacts: ArtifactStore, policy_dir: Path, notifier: Notifier,
        evidence: ModelEvidenceActivities | None = None, tracking: TrackingClient | None = None,
    ) -> None:
        self._registry = registry
        self._artifacts = artifacts
        self._policy_dir = policy_dir
        self._notifier = notifier
        self._evidence = evidence or ModelEvidenceActivities(registry, artifacts, LoaderPool(0))
        self._tracking = tracking

    # ------------------------------------------------------------------ activities

    @activity.defn(name="snapshot_evidence")
    @domain_errors
    def snapshot_evidence(self, request: PromotionInput) -> EvidenceSnapshot:
        """The candidate, the incumbent, the serving schema, the run's author and the policy in force, as of now."""
        actor = workflow_actor()
        loaded = self._policy(actor, request.model)
        policy = stage_policy(loaded.policy, kind=request.kind, target_stage=request.target_stage)
        checks = configured_checks(policy)
        author = run_author(self._registry.versions.get_model_version(actor, name=request.model,
                                                                      version=request.version), self._tracking)
        subject = self._registry.promotions.promotion_subject(
            actor, request.promotion_id, tag_keys=policy.evidence_tags(), policy_hash=loaded.content_hash,
            run_author=author.name, run_author_source=author.source.value, risk_tier=loaded.tier)
        incumbent = subject.incumbent
        evidence = Evidence(
            model=request.model, target_stage=request.target_stage, requester=request.requester,
            candidate=self._version_evidence(subject.candidate, compute_importances="leakage" in checks),
            incumbent=self._version_evidence(incumbent, compute_importances=False) if incumbent else None,
            serving_schema=_signature(subject.serving_schema),
        )
        return EvidenceSnapshot(
            evidence=evidence, policy=policy, policy_hash=loaded.content_hash,
            incumbent_version=incumbent.version if incumbent else None,
            storage_location=subject.candidate.storage_location, checks=checks, run_author=author.name,
            risk_tier=loaded.tier,
        )

    @activity.defn(name="verify_evidence")
    @domain_errors
    def verify_evidence(self, promotion_id: str) -> list[str]:
        """The parts of the candidate's evidence that changed since the checks ran (empty: unchanged)."""
        actor = workflow_actor()
        model = self._registry.promotions.get_promotion(actor, promotion_id).model_name
        return self._registry.promotions.evidence_changes(
            actor, promotion_id, policy_hash=self._policy(actor, model).content_hash)

    @activity.defn(name="evaluate_check")
    @domain_errors
    def evaluate_check(self, check: CheckInput) -> CheckResult:
        """Run one check of the snapshot's policy over its evidence (pure)."""
        evidence = check.snapshot.evidence.model_copy(update={"test_run": check.test_run})
        return run_check(check.name, check.snapshot.policy, evidence)

    @activity.defn(name="record_state")
    @domain_errors
    def record_state(self, record: RecordStateInput) -> None:
        """Mirror the workflow's state into the registry's read model (no event when nothing changed).

        Approvals are left out on purpose: ``record_sign_off`` writes them, one audited
        sign-off at a time, and treats an approver already in the read model as recorded.
        Writing them here first (a state record between a sign-off and its audit, e.g.
        after a reminder) would make that sign-off's audit event silently disappear. Only
        an empty list is written (sign-offs voided by an evidence change).
        """
        state = record.state
        self._registry.promotions.record_promotion_state(
            workflow_actor(), state.promotion_id, status=state.status,
            checklist=state.checklist.model_dump(mode="json") if state.checklist else None,
            approvals=None if state.approvals else [],
            required_approvals=state.required_approvals, approver_role=state.approver_role,
            exclude_requester=state.sign_off.exclude_requester if state.sign_off else None,
            deadline=int(state.deadline.timestamp() * 1000) if state.deadline else None,
            reminders_sent=state.reminders_sent, incumbent_version=state.incumbent_version,
            message=state.message, policy_hash=state.policy_hash or None, sign_off=state.sign_off,
            history=[change.model_dump(mode="json") for change in state.history],
        )

    @activity.defn(name="record_sign_off")
    @domain_errors
    def record_sign_off(self, record: SignOffRecord) -> None:
        """Audit one accepted sign-off under the approver's own name (once per approver)."""
        approval = record.approval
        self._registry.promotions.record_sign_off(
            Actor(name=approval.user, roles=frozenset(approval.roles), groups=frozenset(approval.groups)),
            record.promotion_id,
            approvals=[a.model_dump(mode="json") for a in record.approvals], comment=approval.comment,
        )

    @activity.defn(name="apply_promotion")
    @domain_errors
    def apply_promotion(self, apply: ApplyInput) -> None:
        """Perform the approved transition in one transaction (applying twice changes nothing)."""
        actor = workflow_actor()
        promotion = self._registry.promotions.get_promotion(actor, apply.promotion_id)
        description = None
        if promotion.target_stage == PRODUCTION:
            candidate = self._registry.versions.get_model_version(actor, name=promotion.model_name,
                                                                  version=promotion.version)
            metric = self._primary_number(promotion.model_name, promotion.kind, apply.checklist)
            description = render_description(
                candidate.description, approvers=apply.approvers, validated_on=apply.validated_on.date(),
                promotion_id=promotion.id, primary_metric=metric.label if metric else None,
                candidate_value=metric.candidate if metric else None,
                incumbent_value=metric.production if metric else None, incumbent_version=apply.expected_incumbent,
            )
        self._registry.promotions.apply_promotion(
            actor, apply.promotion_id, expected_incumbent=apply.expected_incumbent, description=description,
            approvers=apply.approvers, validation_date=apply.validated_on.date().isoformat(),
            policy_hash=self._policy(actor, promotion.model_name).content_hash,
        )

    @activity.defn(name="notify")
    @domain_errors
    def notify(self, notify: NotifyInput) -> None:
        """Render the message for this moment of the promotion into the outbox (webhooks get it from there)."""
        if notify.kind not in NOTIFICATION_KINDS:
            raise InvalidParameterError(
                f"Unknown notification kind '{notify.kind}'; one of {', '.join(NOTIFICATION_KINDS)}."
            )
        state = notify.state
        justification = self._registry.promotions.get_promotion(workflow_actor(), state.promotion_id).justification
        text = render_notification(cast(NotificationKind, notify.kind), notification_context(
            state, justification=justification))
        self._notifier.deliver(
            kind=notify.kind, promotion_id=state.promotion_id, model_name=state.model, body=text,
            payload=state.model_dump(mode="json"), event_key=notification_event_key(),
        )

    # ------------------------------------------------------------------ helpers

    def _policy(self, actor: Actor, model: str) -> LoadedPolicy:
        """The policy in force for ``model``: the default, the model's risk tier overlay, its override."""
        tier = self._registry.models.get_registered_model(actor, model).risk_tier
        return load_policy(self._policy_dir, model, tier=tier)

    def _version_evidence(self, mv: ModelVersion, *, compute_importances: bool) -> VersionEvidence:
        """The checks' view of ``mv``; with ``compute_importances``, what its model exposes when nothing is recorded.

        The model's evidence is read from the registry (stored once per artifact digest by
        ``compute_model_evidence``); computed here only when missing. It is never guessed: a model that
        cannot be loaded, or a load that timed out, fails this activity.
        """
        importances = recorded_importances(mv)
        source, scale_dependent, note = ("recorded" if importances else "none"), False, ""
        if not importances and compute_importances:
            stored = self._evidence.evidence_of(workflow_actor(), mv)
            importances, scale_dependent, note = stored.importances, stored.scale_dependent, stored.note
            source = "model" if stored.source == "model" else "none"
        params = mv.evidence.get("params")
        return VersionEvidence(
            version=mv.version, stage=mv.current_stage, metrics=_numbers(mv.evidence.get("metrics")),
            params={str(k): str(v) for k, v in params.items()} if isinstance(params, dict) else {},
            signature=_signature(mv.signature), feature_importances=importances, importances_source=source,
            importances_scale_dependent=scale_dependent, importances_note=note, description=mv.description,
            tags=dict(mv.tags), digest=mv.digest,
        )

    def _primary_number(self, model: str, kind: str, checklist: Checklist | None) -> Number | None:
        """The metrics check's number for the policy's primary metric (best effort)."""
        result = checklist.result("metrics") if checklist else None
        if result is None or not result.numbers:
            return None
        primary: str | None = None
        try:
            primary_rule = stage_policy(self._policy(workflow_actor(), model).policy, kind=kind,
                                        target_stage=PRODUCTION).metrics
            primary = primary_rule.primary if primary_rule else None
        except (PolicyError, InvalidParameterError) as exc:  # the description line is not worth failing for
            log.warning("policy of %s unreadable while applying: %s", model, exc)
        named = [n for n in result.numbers if n.label == primary]
        compared = [n for n in result.numbers if n.production is not None]
        return (named or compared or result.numbers)[0]


def notification_context(state: PromotionState, *, justification: str = "") -> NotificationContext:
    """What a notification may say about ``state`` (who stopped it and why come from ``state.stop``)."""
    stop = state.stop
    return NotificationContext(
        model=state.model, version=state.version, target_stage=state.target_stage, promotion_id=state.promotion_id,
        requester=state.requester, justification=justification, role=state.approver_role,
        exclude_requester=state.sign_off.exclude_requester if state.sign_off else True,
        actor=stop.by if stop else "", comment=stop.reason if stop else state.message,
        approvals_needed=state.required_approvals, approved_by=[a.user for a in state.approvals],
        deadline=state.deadline,
        results=state.checklist.results if state.checklist else [],
        # Only a Production transition archives the version it replaces.
        incumbent_version=state.incumbent_version if state.target_stage == PRODUCTION else None,
    )


def _signature(text: str) -> SignatureSchema | None:
    try:
        return SignatureSchema.from_mlflow_json(text)
    except ValueError:
        return None


def _numbers(values: Any) -> dict[str, float]:
    if not isinstance(values, dict):
        return {}
    return {str(k): float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)}
