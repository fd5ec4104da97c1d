"""SQLModel tables. Rows only: every rule lives in ``RegistryService``.

Timestamps are epoch milliseconds (UTC), the unit of the MLflow wire format.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlmodel import Field, SQLModel

__all__ = [
    "AuditEventRow",
    "AuditHeadRow",
    "AuthFailureRow",
    "GroupMemberRow",
    "GroupRow",
    "ModelGrantRow",
    "ModelEvidenceRow",
    "ModelVersionRow",
    "ModelVersionTagRow",
    "NotificationRow",
    "PostImplementationReviewRow",
    "PromotionRow",
    "RegisteredModelAliasRow",
    "RegisteredModelRow",
    "RegisteredModelTagRow",
    "ServingSchemaRow",
    "SessionRow",
    "TokenRow",
    "UserRow",
    "WebhookAttemptRow",
    "WebhookDeliveryRow",
    "WebhookEventRow",
    "WebhookRow",
]



def _ms() -> Column[int]:
    return Column(BigInteger, nullable=False)


class RegisteredModelRow(SQLModel, table=True):
    """A registered model. ``next_version`` is the never-reused version counter."""

    __tablename__ = "registered_models"

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    name: str = Field(sa_column=Column(String(256), nullable=False, unique=True))
    description: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    creation_timestamp: int = Field(sa_column=_ms())
    last_updated_timestamp: int = Field(sa_column=_ms())
    next_version: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))
    # The policy's risk tier for this model (None: untiered); one of the tiers the default policy declares.
    risk_tier: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    owner_group_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("groups.id", ondelete="SET NULL"), nullable=True, index=True),
    )
    restricted: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=false()))


class ModelVersionRow(SQLModel, table=True):
    """One immutable version of a model; only stage, description, tags and aliases change."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),
        Index("ix_model_versions_stage", "model_id", "current_stage", "version"),
        Index("ix_model_versions_updated", "last_updated_timestamp"),
        Index("ix_model_versions_artifact_id", "artifact_id"),
        # Invariant 2, enforced by the database itself: at most one Production per model.
        Index(
            "uq_model_versions_one_production",
            "model_id",
            unique=True,
            sqlite_where=text("current_stage = 'Production'"),
            postgresql_where=text("current_stage = 'Production'"),
        ),
    )

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    model_id: int = Field(
        sa_column=Column(Integer, ForeignKey("registered_models.id", ondelete="CASCADE"), nullable=False)
    )
    version: int = Field(sa_column=Column(Integer, nullable=False))
    current_stage: str = Field(default="None", sa_column=Column(String(20), nullable=False))
    description: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    source: str = Field(sa_column=Column(Text, nullable=False))
    run_id: str = Field(default="", sa_column=Column(String(64), nullable=False, server_default=""))
    run_link: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    model_id_ref: str = Field(default="", sa_column=Column(String(64), nullable=False, server_default=""))
    storage_location: str = Field(sa_column=Column(Text, nullable=False))
    artifact_id: str = Field(default="", sa_column=Column(String(64), nullable=False, server_default=""))
    digest: str = Field(sa_column=Column(String(80), nullable=False))
    file_digests: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    signature: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    evidence: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
    status: str = Field(default="READY", sa_column=Column(String(32), nullable=False))
    status_message: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    user_id: str = Field(default="", sa_column=Column(String(256), nullable=False, server_default=""))
    creation_timestamp: int = Field(sa_column=_ms())
    last_updated_timestamp: int = Field(sa_column=_ms())


class RegisteredModelTagRow(SQLModel, table=True):
    """A key/value tag on a registered model."""

    __tablename__ = "registered_model_tags"

    model_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True
        )
    )
    key: str = Field(sa_column=Column(String(250), primary_key=True))
    value: str = Field(sa_column=Column(Text, nullable=False))


class ModelVersionTagRow(SQLModel, table=True):
    """A key/value tag on a model version."""

    __tablename__ = "model_version_tags"

    version_id: int = Field(
        sa_column=Column(Integer, ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True)
    )
    key: str = Field(sa_column=Column(String(250), primary_key=True))
    value: str = Field(sa_column=Column(Text, nullable=False))


class RegisteredModelAliasRow(SQLModel, table=True):
    """An alias: a named pointer from a model to exactly one of its live versions."""

    __tablename__ = "registered_model_aliases"

    model_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True
        )
    )
    alias: str = Field(sa_column=Column(String(255), primary_key=True))
    version_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("model_versions.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )


class AuditEventRow(SQLModel, table=True):
    """One append-only audit event; ``hash`` chains it to the event before it."""

    __tablename__ = "audit_events"

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False, unique=True))
    timestamp: int = Field(sa_column=_ms())
    actor: str = Field(sa_column=Column(String(256), nullable=False))
    action: str = Field(sa_column=Column(String(64), nullable=False))
    model_name: str = Field(default="", sa_column=Column(String(256), nullable=False, index=True))
    version: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    subject: str = Field(sa_column=Column(String(600), nullable=False))
    before: str = Field(default="null", sa_column=Column(Text, nullable=False))
    after: str = Field(default="null", sa_column=Column(Text, nullable=False))
    request_id: str = Field(default="", sa_column=Column(String(64), nullable=False))
    prev_hash: str = Field(sa_column=Column(String(64), nullable=False))
    hash: str = Field(sa_column=Column(String(64), nullable=False))


class AuditHeadRow(SQLModel, table=True):
    """The single row holding the tip of the audit hash chain; locking it serialises appends."""

    __tablename__ = "audit_head"

    id: int = Field(default=1, sa_column=Column(Integer, primary_key=True))
    seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    hash: str = Field(sa_column=Column(String(64), nullable=False))


class UserRow(SQLModel, table=True):
    """A user; ``roles`` is a comma-separated subset of viewer, engineer, approver, admin.

    A user who signs in through OpenID Connect is keyed by the provider's (issuer, subject), never by a name.
    """

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("oidc_issuer", "oidc_subject", name="uq_users_oidc_identity"),)

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    name: str = Field(sa_column=Column(String(256), nullable=False, unique=True))
    roles: str = Field(sa_column=Column(String(128), nullable=False))
    creation_timestamp: int = Field(sa_column=_ms())
    primary_group_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("groups.id", ondelete="SET NULL"), nullable=True)
    )
    oidc_issuer: str | None = Field(default=None, sa_column=Column(String(512), nullable=True))
    oidc_subject: str | None = Field(default=None, sa_column=Column(String(255), nullable=True))


class TokenRow(SQLModel, table=True):
    """A bearer token, stored only as its HMAC under the server key (``token_hashes.py``).

    ``salt``: per token for ``<id>.<secret>`` tokens, ``""`` for bare tokens (found by their keyed hash),
    NULL for a legacy unsalted SHA-256, rehashed on first use.
    """

    __tablename__ = "tokens"

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    user_id: int = Field(sa_column=Column(Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False))
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    salt: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    creation_timestamp: int = Field(sa_column=_ms())
    name: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    expires_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    """NULL: never (tokens issued before 0015 and by admins)."""
    revoked_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    last_used_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    """Updated at most hourly (``personal_tokens.LAST_USED_EVERY_MS``), so a request rarely writes."""


class AuthFailureRow(SQLModel, table=True):
    """Failed token attempts of one client address in one fixed time window (``auth_failures.py``)."""

    __tablename__ = "auth_failures"

    address: str = Field(sa_column=Column(String(64), primary_key=True))
    window_start: int = Field(sa_column=Column(BigInteger, primary_key=True, index=True))
    failures: int = Field(sa_column=Column(Integer, nullable=False))


class ServingSchemaRow(SQLModel, table=True):
    """The live serving schema of a model (MLflow signature JSON) that promotions are checked against."""

    __tablename__ = "serving_schemas"

    model_id: int = Field(
        sa_column=Column(Integer, ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True)
    )
    signature: str = Field(sa_column=Column(Text, nullable=False))
    last_updated_timestamp: int = Field(sa_column=_ms())


class PromotionRow(SQLModel, table=True):
    """The read model of one promotion request; Temporal is the source of truth for its progress."""

    __tablename__ = "promotions"
    __table_args__ = (
        Index("ix_promotions_status", "status"),
        Index("ix_promotions_model", "model_name", "version"),
        # One live promotion per version and target, whatever Temporal's retention says.
        Index(
            "uq_promotions_live",
            "model_name",
            "version",
            "target_stage",
            unique=True,
            sqlite_where=text("live = 1"),
            postgresql_where=text("live"),
        ),
    )

    id: str = Field(sa_column=Column(String(40), primary_key=True))
    workflow_id: str = Field(sa_column=Column(String(600), nullable=False))
    model_name: str = Field(sa_column=Column(String(256), nullable=False))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    target_stage: str = Field(sa_column=Column(String(20), nullable=False))
    kind: str = Field(sa_column=Column(String(20), nullable=False))
    requester: str = Field(sa_column=Column(String(256), nullable=False))
    justification: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(sa_column=Column(String(32), nullable=False))
    live: bool = Field(sa_column=Column(Boolean, nullable=False))
    incumbent_version: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    checklist: str = Field(default="null", sa_column=Column(Text, nullable=False))
    approvals: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    required_approvals: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    approver_role: str = Field(default="approver", sa_column=Column(String(32), nullable=False))
    exclude_requester: bool = Field(default=True, sa_column=Column(Boolean, nullable=False, server_default=true()))
    deadline: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    reminders_sent: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    message: str = Field(default="", sa_column=Column(Text, nullable=False))
    policy_hash: str = Field(default="", sa_column=Column(String(64), nullable=False))
    # The snapshot's sign-off rule (JSON, "null": none needed or no checks yet) and the status history (JSON list).
    sign_off: str = Field(default="null", sa_column=Column(Text, nullable=False, server_default="null"))
    history: str = Field(default="[]", sa_column=Column(Text, nullable=False, server_default="[]"))
    # The candidate's immutable identity and the evidence its checks ran on (the sign-offs bind to both).
    candidate_id: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    candidate_digest: str = Field(default="", sa_column=Column(String(80), nullable=False, server_default=""))
    evidence_hash: str = Field(default="", sa_column=Column(String(64), nullable=False, server_default=""))
    evidence: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
    # What the checks' snapshot recorded: the risk tier its policy used and the author of the training run
    # (run_author_source: how that author is known, policies.run_authorship.AuthorSource; "" before it was recorded).
    risk_tier: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    run_author: str = Field(default="", sa_column=Column(String(256), nullable=False, server_default=""))
    run_author_source: str = Field(default="", sa_column=Column(String(16), nullable=False, server_default=""))
    creation_timestamp: int = Field(sa_column=_ms())
    last_updated_timestamp: int = Field(sa_column=_ms())


class NotificationRow(SQLModel, table=True):
    """A rendered notification in the outbox (``delivery`` names its webhook event: ``notification_outbox.py``)."""

    __tablename__ = "notifications"
    __table_args__ = (Index("uq_notifications_event_key", "event_key", unique=True),)

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    timestamp: int = Field(sa_column=_ms())
    kind: str = Field(sa_column=Column(String(32), nullable=False))
    promotion_id: str = Field(sa_column=Column(String(40), nullable=False, index=True))
    model_name: str = Field(sa_column=Column(String(256), nullable=False))
    recipients: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False))
    delivery: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    event_key: str | None = Field(default=None, sa_column=Column(String(80), nullable=True))
    """The notification event (the sending activity's run and id): a retried send finds its row."""


class PostImplementationReviewRow(SQLModel, table=True):
    """The review an admin's break-glass move into Production opened, in that move's transaction (``reviews.py``).

    ``status`` is ``open`` or ``completed``; overdue is derived when read (``due_at`` against now, or
    ``escalated_at``, set when its workflow found the deadline passed). The policy's reminder interval and
    reviewer role are copied at opening, so the review keeps the rule it was opened under.
    """

    __tablename__ = "post_implementation_reviews"
    __table_args__ = (Index("ix_post_implementation_reviews_status", "status", "due_at"),)

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    model_name: str = Field(sa_column=Column(String(256), nullable=False, index=True))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    admin: str = Field(sa_column=Column(String(256), nullable=False))
    reason: str = Field(default="", sa_column=Column(Text, nullable=False))
    opened_at: int = Field(sa_column=_ms())
    due_at: int = Field(sa_column=_ms())
    reminder_every_s: int = Field(sa_column=Column(Integer, nullable=False))
    reviewer_role: str = Field(sa_column=Column(String(32), nullable=False))
    status: str = Field(default="open", sa_column=Column(String(16), nullable=False))
    escalated_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    completed_by: str | None = Field(default=None, sa_column=Column(String(256), nullable=True))
    completed_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    outcome: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    note: str = Field(default="", sa_column=Column(Text, nullable=False))


class ModelEvidenceRow(SQLModel, table=True):
    """What the checks need from a model's files, computed once per artifact digest (``model_evidence.py``)."""

    __tablename__ = "model_evidence"

    digest: str = Field(sa_column=Column(String(80), primary_key=True))
    source: str = Field(sa_column=Column(String(16), nullable=False))
    importances: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    scale_dependent: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    note: str = Field(default="", sa_column=Column(Text, nullable=False))
    flavors: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    loader_version: int = Field(sa_column=Column(Integer, nullable=False))
    computed_at: int = Field(sa_column=_ms())


class SessionRow(SQLModel, table=True):
    """A web-page session: the hash of a random session id, its user, and the token that signed in (NULL after an
    OpenID Connect sign-in).

    Deleting the token or the user deletes its sessions (revoking the token too); roles are read from the user on
    every request.
    """

    __tablename__ = "web_sessions"

    id_hash: str = Field(sa_column=Column(String(64), primary_key=True))
    token_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("tokens.id", ondelete="CASCADE"), nullable=True, index=True),
    )
    user_id: int = Field(
        sa_column=Column(Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    user_name: str = Field(sa_column=Column(String(256), nullable=False))
    csrf_token: str = Field(sa_column=Column(String(64), nullable=False))
    creation_timestamp: int = Field(sa_column=_ms())
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))


class GroupRow(SQLModel, table=True):
    """A group of users (a team); owns models and receives grants. ``name`` is stored NFKC-normalised."""

    __tablename__ = "groups"

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    name: str = Field(sa_column=Column(String(256), nullable=False, unique=True))
    description: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    created_at: int = Field(sa_column=_ms())


class GroupMemberRow(SQLModel, table=True):
    """A user's membership of a group; deleting either deletes it."""

    __tablename__ = "group_members"

    group_id: int = Field(
        sa_column=Column(Integer, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)
    )
    user_id: int = Field(
        sa_column=Column(Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    )


class ModelGrantRow(SQLModel, table=True):
    """A per-model permission (READ, EDIT or MANAGE) for a user or a group (``principal_kind``)."""

    __tablename__ = "model_grants"
    __table_args__ = (Index("ix_model_grants_principal", "principal_kind", "principal_id"),)

    model_id: int = Field(
        sa_column=Column(Integer, ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True)
    )
    principal_kind: str = Field(sa_column=Column(String(8), primary_key=True))
    principal_id: int = Field(sa_column=Column(Integer, primary_key=True))
    permission: str = Field(sa_column=Column(String(8), nullable=False))


class WebhookRow(SQLModel, table=True):
    """A webhook subscription (MLflow's API and Calabi's). ``secret`` is encrypted under the server key."""

    __tablename__ = "webhooks"

    id: str = Field(sa_column=Column(String(32), primary_key=True))
    name: str = Field(sa_column=Column(String(256), nullable=False))
    url: str = Field(sa_column=Column(Text, nullable=False))
    events: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    description: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    secret: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    payload_format: str = Field(default="mlflow", sa_column=Column(String(16), nullable=False))
    template: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    owner: str = Field(sa_column=Column(String(256), nullable=False))
    consecutive_failures: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    failing_since: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    creation_timestamp: int = Field(sa_column=_ms())
    last_updated_timestamp: int = Field(sa_column=_ms())


class WebhookEventRow(SQLModel, table=True):
    """One event in the outbox, written in the transaction of the change it reports."""

    __tablename__ = "webhook_events"

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    model_name: str = Field(sa_column=Column(String(256), nullable=False))
    event: str = Field(sa_column=Column(String(64), nullable=False))
    payload: str = Field(sa_column=Column(Text, nullable=False))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))


class WebhookDeliveryRow(SQLModel, table=True):
    """One event to one webhook; ``id`` is the delivery id every attempt sends. Leased by one dispatcher."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id", name="uq_webhook_deliveries_event"),
        Index("ix_webhook_deliveries_order", "webhook_id", "model_name", "status", "event_id"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )

    id: str = Field(sa_column=Column(String(36), primary_key=True))
    webhook_id: str = Field(
        sa_column=Column(String(32), ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False)
    )
    event_id: int = Field(sa_column=Column(Integer, ForeignKey("webhook_events.id"), nullable=False))
    model_name: str = Field(sa_column=Column(String(256), nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    next_attempt_at: int = Field(sa_column=_ms())
    lease_owner: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    lease_until: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    created_at: int = Field(sa_column=_ms())
    last_updated_timestamp: int = Field(sa_column=_ms())


class WebhookAttemptRow(SQLModel, table=True):
    """One attempt of a delivery: when, how it answered (or why it failed), how long it took."""

    __tablename__ = "webhook_attempts"

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    delivery_id: str = Field(
        sa_column=Column(String(36), ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False,
                         index=True)
    )
    attempt: int = Field(sa_column=Column(Integer, nullable=False))
    started_at: int = Field(sa_column=_ms())
    status_code: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    error: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    latency_ms: int = Field(sa_column=Column(Integer, nullable=False))
    response_excerpt: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
