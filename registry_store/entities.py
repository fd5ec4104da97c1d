"""What the service returns: immutable views, independent of the tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from policies.run_authorship import run_author_label

__all__ = [
    "AliasRef",
    "AuditEvent",
    "AuditVerification",
    "AuditTrail",
    "CandidateIdentity",
    "ChainAnchor",
    "ChainLink",
    "EvidencePack",
    "Group",
    "ModelEvidence",
    "ModelGrant",
    "ModelPermissions",
    "ModelVersion",
    "Notification",
    "Page",
    "PolicyFile",
    "PolicyInForce",
    "PostImplementationReview",
    "ProductionAt",
    "ProductionHistory",
    "ProductionStint",
    "ReviewStatus",
    "Promotion",
    "PromotionSubject",
    "RegisteredModel",
    "User",
    "Webhook",
    "WebhookAttempt",
    "WebhookDelivery",
]

T = TypeVar("T")


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class AliasRef(_View):
    """An alias and the version number it names."""

    alias: str
    version: int


class ModelVersion(_View):
    """One version of a registered model."""

    name: str
    version: int
    current_stage: str
    description: str
    source: str
    run_id: str
    run_link: str
    model_id: str = ""
    storage_location: str
    artifact_id: str = ""
    digest: str
    signature: str
    evidence: dict[str, Any]
    status: str
    status_message: str
    user_id: str
    creation_timestamp: int
    last_updated_timestamp: int
    tags: dict[str, str]
    aliases: list[str]


class ModelEvidence(_View):
    """What the checks need from one artifact's model files (feature importances), by artifact digest.

    ``source`` is ``recorded`` (the artifact's ``feature_importances.json``), ``model`` (read from the
    loaded model) or ``none`` (``note`` says why); ``scale_dependent``: raw coefficients of a linear
    model with no scaler in front.
    """

    digest: str
    source: str
    importances: dict[str, float]
    scale_dependent: bool
    note: str
    flavors: list[str]
    loader_version: int
    computed_at: int


class RegisteredModel(_View):
    """A registered model with its tags, aliases, latest version per stage, owning group and restricted flag."""

    name: str
    description: str
    creation_timestamp: int
    last_updated_timestamp: int
    tags: dict[str, str]
    aliases: list[AliasRef]
    latest_versions: list[ModelVersion]
    risk_tier: str | None = None
    owner_group: str | None = None
    restricted: bool = False


class Page(_View, Generic[T]):
    """One page of search results; ``next_page_token`` only when another page exists."""

    items: Sequence[T]
    next_page_token: str | None = None


class User(_View):
    """A user, the roles granted to it and its primary group (the owner of the models it creates)."""

    name: str
    roles: list[str]
    creation_timestamp: int
    primary_group: str | None = None


class ModelGrant(_View):
    """A permission (READ, EDIT or MANAGE) on one model for a user or a group (``principal_kind``)."""

    principal_kind: str
    principal: str
    permission: str


class ModelPermissions(_View):
    """Who may use one model: its owning group (MANAGE), whether it is restricted, and its grants."""

    name: str
    owner_group: str | None
    restricted: bool
    grants: list[ModelGrant]


class Group(_View):
    """A group of users (a team) and its members' names."""

    name: str
    description: str
    created_at: int
    members: list[str]


class PersonalToken(_View):
    """A user's API token as its owner sees it (never its secret): name, creation, expiry, revocation, last use."""

    id: int
    name: str
    creation_timestamp: int
    expires_at: int | None
    revoked_at: int | None
    last_used_at: int | None
    """Updated at most hourly."""


class AuditEvent(_View):
    """One entry of the hash-chained audit log."""

    seq: int
    timestamp: int
    actor: str
    action: str
    model_name: str
    version: int | None
    subject: str
    before: Any
    after: Any
    request_id: str
    prev_hash: str
    hash: str


class AuditVerification(_View):
    """Result of checking the audit hash chain."""

    ok: bool
    events_checked: int
    first_bad_seq: int | None = None
    problem: str = ""


ReviewStatus = Literal["open", "overdue", "completed"]


class PostImplementationReview(_View):
    """The review of an admin's break-glass move into Production; ``status`` is derived when read.

    ``overdue``: still open after ``due_at`` (or escalated by its workflow, which found the deadline passed).
    """

    id: int
    model_name: str
    version: int
    admin: str
    """The admin who broke the glass (may not complete the review)."""
    reason: str = ""
    opened_at: int
    due_at: int
    reminder_every_s: int
    reviewer_role: str
    status: ReviewStatus
    escalated_at: int | None = None
    completed_by: str | None = None
    completed_at: int | None = None
    outcome: str | None = None
    note: str = ""


class ProductionStint(_View):
    """A period during which one version was Production: from ``since`` until ``until`` (exclusive; None: now)."""

    version: int
    since: int
    until: int | None = None
    moved_by: str
    """Who put it there: the promotion's requester, or the admin who broke glass."""
    ended_by: str = ""
    why: str = ""
    promotion: str | None = None
    approved_by: list[str] = []
    break_glass: bool = False
    review_id: int | None = None
    """The post-implementation review the break-glass move opened (``review``: how it stands)."""
    review: PostImplementationReview | None = None


class ProductionHistory(_View):
    """Which version of a model was Production when, who moved it there and why; newest first."""

    name: str
    stints: list[ProductionStint]


class ProductionAt(_View):
    """The version that was Production at the instant ``at`` (epoch milliseconds), if any."""

    name: str
    at: int
    version: int | None
    stint: ProductionStint | None


class Promotion(_View):
    """The read model of a promotion request (Temporal holds the live workflow)."""

    id: str
    workflow_id: str
    model_name: str
    version: int
    target_stage: str
    kind: str
    requester: str
    justification: str
    status: str
    live: bool
    incumbent_version: int | None
    checklist: Any
    approvals: list[dict[str, Any]]
    required_approvals: int
    approver_role: str
    exclude_requester: bool = True
    deadline: int | None
    reminders_sent: int
    message: str
    policy_hash: str
    sign_off: dict[str, Any] | None = None
    history: list[dict[str, Any]] = []
    candidate_digest: str = ""
    evidence_hash: str = ""
    risk_tier: str | None = None
    run_author: str = ""
    run_author_source: str = ""
    """How ``run_author`` is known (``policies.run_authorship.AuthorSource``; "" when not recorded)."""
    creation_timestamp: int
    last_updated_timestamp: int

    @property
    def run_author_basis(self) -> str:
        """How pages describe ``run_author_source``: "verified by Calabi", "claimed by the client" … or ""."""
        return run_author_label(self.run_author_source)


class PromotionSubject(_View):
    """What a promotion's checks look at: the candidate, the incumbent and the serving schema."""

    candidate: ModelVersion
    incumbent: ModelVersion | None
    serving_schema: str


class Notification(_View):
    """A rendered promotion notification from the outbox."""

    id: int
    timestamp: int
    kind: str
    promotion_id: str
    model_name: str
    recipients: list[str]
    body: str
    delivery: dict[str, Any]
    """``{"webhook_event": id}``: its ``notification.created`` event in the webhook outbox (empty: no subscriber)."""


class CandidateIdentity(_View):
    """The promoted version as the promotion bound it (``digest``) and as its row reads at export."""

    model_name: str
    version: int
    digest: str
    """The artifact digest recorded when the promotion was requested (what the sign-offs bind to)."""
    current_digest: str
    """The version row's digest at export ("" when the version was deleted since)."""
    source: str
    run_id: str
    storage_location: str


class PolicyFile(_View):
    """One policy file in force: where it is read from and its text."""

    source: str
    text: str


class PolicyInForce(_View):
    """The policy files in force at export, the content hash the promotion recorded and the one they give now."""

    files: list[PolicyFile]
    recorded_hash: str
    current_hash: str
    """"" when the policy in force no longer loads (``problem`` says why)."""
    changed: bool
    problem: str = ""


class ChainLink(_View):
    """One event's place in the audit hash chain (no content: it may be about another model)."""

    seq: int
    prev_hash: str
    hash: str


class ChainAnchor(_View):
    """The signed anchor (the last head ``calabi audit verify`` verified) and whether the chain still holds it."""

    seq: int | None = None
    hash: str = ""
    held: bool = False
    problem: str = ""


class AuditTrail(_View):
    """The promotion's audit events, the links from the first of them to the head, and the head at export.

    Each event's ``hash`` is ``HASH_RULE`` over its own fields; each link's ``prev_hash`` is the hash of the
    link before it, so the events verify against each other up to ``head_hash``.
    """

    hash_rule: str
    events: list[AuditEvent]
    links: list[ChainLink]
    head_seq: int
    head_hash: str
    anchor: ChainAnchor | None = None


class EvidencePack(_View):
    """What a model validator hands an examiner about one promotion, read in one snapshot."""

    format: str
    exported_at: int
    exported_by: str
    promotion: Promotion
    """The read model: requester and time, justification, checklist (every check, numbers, reasons), evidence
    hash, sign-off rule, approvals (who signed and when) and the status history."""
    candidate: CandidateIdentity
    policy: PolicyInForce
    notifications: list[Notification]
    audit: AuditTrail


class Webhook(_View):
    """A webhook subscription; its secret is never part of a view (``has_secret`` says whether it has one)."""

    id: str
    name: str
    url: str
    events: list[str]
    status: str
    description: str
    has_secret: bool
    payload_format: str
    template: str
    owner: str
    consecutive_failures: int
    creation_timestamp: int
    last_updated_timestamp: int


class WebhookAttempt(_View):
    """One attempt of a delivery."""

    attempt: int
    started_at: int
    status_code: int | None
    error: str
    latency_ms: int
    response_excerpt: str


class WebhookDelivery(_View):
    """One event to one webhook (``id`` is the ``X-MLflow-Delivery-Id`` of every attempt), with its attempts."""

    id: str
    webhook_id: str
    event: str
    model_name: str
    status: str
    attempts: int
    next_attempt_at: int
    created_at: int
    attempt_log: list[WebhookAttempt] = []
