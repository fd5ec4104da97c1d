"""PromotionRecords: the promotion read model, who may decide, eligibility and the governed apply."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from types import EllipsisType
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select

from policies.decisions import Action, refusal
from policies.models import SignOffRule
from policies.status import TERMINAL_STATUSES, PromotionStatus
from registry_store import search
from registry_store.audit import Actor
from registry_store.committed_events import status_since_ms
from registry_store.context import ServiceBase
from registry_store.entities import Page, Promotion, PromotionSubject
from registry_store.errors import AlreadyExistsError, InvalidParameterError, StaleEvidenceError, refused
from registry_store.model_access import EDIT, READ, visible_model_name
from registry_store.promotion_apply import apply_transition
from registry_store.promotion_binding import bind_evidence, check_binding, evidence_changes
from registry_store.promotion_events import publish_promotion
from registry_store.promotion_rows import (
    ELIGIBLE_SOURCE_STAGES,
    check_eligible,
    decision_facts,
    loggable,
    may_sign_off,
    production_version,
    promotion_row,
    promotion_view,
)
from registry_store.stages import PRODUCTION, canonical_stage
from registry_store.tables import AuditEventRow, PromotionRow, ServingSchemaRow
from registry_store.users import require_role
from registry_store.validation import parse_version, validate_description, validate_model_name
from registry_store.views import versions_views

__all__ = ["PromotionRecords"]

MAX_PROMOTION_RESULTS = 1000


class PromotionRecords(ServiceBase):
    """Open, track and apply promotions; the workflow orchestrates, the rules are here."""

    def open_promotion(
        self,
        actor: Actor,
        *,
        model: object,
        version: object,
        target_stage: object,
        justification: object,
        kind: str = "promotion",
    ) -> Promotion:
        """Record a new promotion request (one live request per version and target)."""
        require_role(actor, "engineer", "request promotions")
        model_name = validate_model_name(model)
        number = parse_version(version)
        target = canonical_stage(target_stage)
        reason = validate_description(justification).strip()
        if not reason:
            raise InvalidParameterError("A promotion needs a justification.")
        eligible = ELIGIBLE_SOURCE_STAGES.get((kind, target))
        if eligible is None:
            raise InvalidParameterError(f"Cannot request a {kind} to {target}: the targets are Staging and Production.")
        now = self._clock()
        try:
            with self._db.write() as session:
                row = self._model(session, model_name, actor=actor, need=EDIT, lock=True)
                candidate = self._version(session, row, number)
                check_eligible(candidate, target, eligible, kind)
                promotion = PromotionRow(
                    id=uuid.uuid4().hex[:16], workflow_id=f"promotion-{row.name}-{number}-{target}",
                    model_name=row.name, version=number, target_stage=target, kind=kind,
                    requester=actor.name, justification=reason, status=PromotionStatus.RUNNING_CHECKS, live=True,
                    incumbent_version=production_version(session, row), candidate_id=candidate.id,
                    candidate_digest=candidate.digest, creation_timestamp=now, last_updated_timestamp=now,
                )
                session.add(promotion)
                session.flush()
                self._audit(session, actor, "request_promotion", row.name, number,
                            after={"promotion": promotion.id, "target": target, "kind": kind,
                                   "justification": reason, "incumbent": promotion.incumbent_version,
                                   "candidate_digest": candidate.digest})
                publish_promotion(self.context, session, promotion, "requested", justification=reason)
                return promotion_view(promotion)
        except IntegrityError as exc:
            raise AlreadyExistsError(
                f"A promotion of {model_name} version {number} to {target} is already in progress."
            ) from exc

    def get_promotion(self, actor: Actor, promotion_id: object) -> Promotion:
        """One promotion's read model."""
        require_role(actor, "viewer", "read promotions")
        with self._db.read() as session:
            return promotion_view(promotion_row(session, promotion_id, reader=actor))

    def live_promotions(self, actor: Actor, model: object, version: object = None) -> list[Promotion]:
        """The live promotions of ``model`` (of one ``version`` when given)."""
        require_role(actor, "viewer", "read promotions")
        query = select(PromotionRow).where(col(PromotionRow.model_name) == validate_model_name(model),
                                           col(PromotionRow.live), visible_model_name(actor, PromotionRow.model_name))
        if version is not None:
            query = query.where(col(PromotionRow.version) == parse_version(version))
        with self._db.read() as session:
            return [promotion_view(row) for row in session.exec(query.order_by(col(PromotionRow.id))).all()]

    def live_promotions_created_before(self, actor: Actor, created_before: int) -> list[Promotion]:
        """Every live promotion opened before ``created_before`` (epoch ms), oldest first: what a reconciler checks."""
        require_role(actor, "viewer", "read promotions")
        query = select(PromotionRow).where(col(PromotionRow.live),
                                           col(PromotionRow.creation_timestamp) < created_before)
        with self._db.read() as session:
            rows = session.exec(query.order_by(col(PromotionRow.creation_timestamp), col(PromotionRow.id))).all()
            return [promotion_view(row) for row in rows]

    def status_counts(self) -> dict[str, int]:
        """How many promotions are in each status (one GROUP BY; aggregate numbers, no names: for metrics)."""
        query = select(PromotionRow.status, func.count()).group_by(col(PromotionRow.status))
        with self._db.read() as session:
            return {status: int(count) for status, count in session.exec(query).all()}

    def close_promotion(self, actor: Actor, promotion_id: object, *, reason: str) -> Promotion | None:
        """Close a live promotion as ``failed`` with ``reason`` (audited); None when it was no longer live.

        For a promotion whose workflow never started or ended without closing it: the row is locked
        and re-checked, so concurrent closers (several replicas) close it once.
        """
        require_role(actor, "admin", "close promotions")
        with self._db.write() as session:
            row = promotion_row(session, promotion_id, lock=True)
            if not row.live:
                return None
            before = {"status": row.status, "message": row.message}
            since = status_since_ms(row.history, row.creation_timestamp)
            now = self._clock()
            change = {"at": datetime.fromtimestamp(now / 1000, tz=UTC).isoformat(), "status": PromotionStatus.FAILED,
                      "note": reason}
            row.status, row.message, row.live = PromotionStatus.FAILED, reason, False
            row.history = json.dumps([*json.loads(row.history), change])
            row.last_updated_timestamp = now
            session.add(row)
            self._audit(session, actor, "promotion_state", row.model_name, row.version, before=before,
                        after={"promotion": row.id, "status": row.status, "message": reason}, status_since_ms=since)
            publish_promotion(self.context, session, row, row.status)
            return promotion_view(row)

    def list_promotions(
        self,
        actor: Actor,
        *,
        status: str | None = None,
        model: str | None = None,
        awaiting: Actor | None = None,
        max_results: object = 100,
        page_token: str | None = None,
    ) -> Page[Promotion]:
        """Promotions, newest first; ``awaiting`` keeps those that user may still sign off."""
        require_role(actor, "viewer", "read promotions")
        limit = search.validate_max_results(max_results, limit=MAX_PROMOTION_RESULTS)
        offset = search.decode_page_token(page_token)
        query = select(PromotionRow).where(visible_model_name(actor, PromotionRow.model_name))
        if status:
            if status not in PromotionStatus.__members__.values():
                raise InvalidParameterError(
                    f"Unknown promotion status '{status}'; one of {', '.join(s.value for s in PromotionStatus)}."
                )
            query = query.where(col(PromotionRow.status) == status)
        if model:
            query = query.where(col(PromotionRow.model_name) == model)
        if awaiting is not None:
            query = query.where(col(PromotionRow.status) == PromotionStatus.AWAITING_SIGN_OFF)
        with self._db.read() as session:
            rows = session.exec(
                query.order_by(col(PromotionRow.creation_timestamp).desc(), col(PromotionRow.id))
                .offset(offset).limit(limit + 1)
            ).all()
        items = [promotion_view(r) for r in rows[:limit]]
        if awaiting is not None:
            items = [p for p in items if may_sign_off(awaiting, p)]
        return Page(items=items, next_page_token=search.next_page_token(len(rows), offset=offset, limit=limit))

    def authorize_decision(
        self,
        actor: Actor,
        promotion_id: object,
        action: str,
        *,
        comment: str | None = None,
    ) -> Promotion:
        """Check that ``actor`` may make this decision now (``policies.decisions``; the workflow checks again).

        Decided on the read model alone (status, approvals, the snapshot's sign-off rule), the one
        view reads show; ``comment=None`` checks who may decide and when, not what the decision says.
        """
        if action not in Action.__members__.values():
            raise InvalidParameterError(f"Unknown decision '{action}'.")
        promotion = self.get_promotion(actor, promotion_id)
        why = refusal(Action(action), user=actor.name, roles=actor.roles, groups=actor.groups,
                      promotion=decision_facts(promotion), comment=comment)
        if why is not None:
            raise refused(why.kind.value, why.message)
        return promotion

    def promotion_subject(
        self, actor: Actor, promotion_id: object, *, tag_keys: Sequence[str], policy_hash: str, run_author: str = "",
        run_author_source: str = "", risk_tier: str | None = None,
    ) -> PromotionSubject:
        """The candidate, the current Production version and the serving schema, as of now.

        In the same transaction the promotion is bound to this evidence (``tag_keys``: the tags the
        policy reads): what the checks are about to see is what the sign-offs and apply are held to.
        The snapshot's ``run_author`` (whom separation of duties excludes; ``run_author_source``: how it is
        known) and the ``risk_tier`` its policy was loaded for are recorded with it.
        """
        require_role(actor, "engineer", "snapshot promotions")
        with self._db.write() as session:
            promotion = promotion_row(session, promotion_id, lock=True)
            model = self._model(session, promotion.model_name, actor=actor, need=READ)
            candidate = self._version(session, model, promotion.version)
            bind_evidence(self.context, session, actor, promotion, candidate, tag_keys=tag_keys,
                          policy_hash=policy_hash, run_author=run_author, run_author_source=run_author_source,
                          risk_tier=risk_tier)
            incumbent_number = production_version(session, model)
            rows = [(candidate, model.name)]
            if incumbent_number is not None and incumbent_number != candidate.version:
                rows.append((self._version(session, model, incumbent_number), model.name))
            views = versions_views(session, rows, with_aliases=True)
            schema = session.get(ServingSchemaRow, model.id)
            return PromotionSubject(
                candidate=views[0], incumbent=views[1] if len(views) > 1 else None,
                serving_schema=schema.signature if schema else "",
            )

    def evidence_changes(self, actor: Actor, promotion_id: object, *, policy_hash: str) -> list[str]:
        """Which parts of the candidate's evidence changed since the checks ran (empty: none)."""
        require_role(actor, "viewer", "read promotions")
        with self._db.read() as session:
            promotion = promotion_row(session, promotion_id)
            model = self._model(session, promotion.model_name, actor=actor, need=READ)
            candidate = self._version(session, model, promotion.version)
            return evidence_changes(session, promotion, candidate, policy_hash)

    def record_promotion_state(
        self,
        actor: Actor,
        promotion_id: object,
        *,
        status: PromotionStatus,
        checklist: Any = None,
        approvals: Sequence[dict[str, Any]] | None = None,
        required_approvals: int | None = None,
        approver_role: str | None = None,
        exclude_requester: bool | None = None,
        deadline: int | None = None,
        reminders_sent: int | None = None,
        incumbent_version: int | None = None,
        message: str | None = None,
        policy_hash: str | None = None,
        sign_off: SignOffRule | None | EllipsisType = ...,
        history: Sequence[dict[str, Any]] | None = None,
    ) -> Promotion:
        """Update the read model; an event is audited only when something changed (idempotent).

        ``None`` (``...`` for ``sign_off``, where ``None`` means "no sign-off needed") keeps a column as it is.
        """
        with self._db.write() as session:
            row = promotion_row(session, promotion_id, lock=True)
            changes: dict[str, Any] = {"status": str(status)}
            rule = None if isinstance(sign_off, EllipsisType) else json.dumps(
                sign_off.model_dump(mode="json") if sign_off else None, sort_keys=True)
            for name, value in (("checklist", None if checklist is None else json.dumps(checklist, sort_keys=True)),
                                ("approvals", None if approvals is None else json.dumps(list(approvals))),
                                ("sign_off", rule), ("history", None if history is None else json.dumps(list(history))),
                                ("required_approvals", required_approvals), ("approver_role", approver_role),
                                ("exclude_requester", exclude_requester),
                                ("deadline", deadline), ("reminders_sent", reminders_sent),
                                ("incumbent_version", incumbent_version), ("message", message),
                                ("policy_hash", policy_hash)):
                if value is not None:
                    changes[name] = value
            changed = {k: v for k, v in changes.items() if getattr(row, k) != v}
            if not changed:
                return promotion_view(row)
            if not row.live and "status" in changed:
                raise InvalidParameterError(
                    f"Promotion {row.id} was closed as {row.status}; its status can no longer change.")
            before = {k: getattr(row, k) for k in changed}
            since = status_since_ms(row.history, row.creation_timestamp) if "status" in changed else None
            for key, value in changed.items():
                setattr(row, key, value)
            row.live = row.status not in TERMINAL_STATUSES
            row.last_updated_timestamp = self._clock()
            session.add(row)
            # The history only lists the status changes these events already record: not repeated in each.
            audited = {k: v for k, v in changed.items() if k != "history"}
            self._audit(session, actor, "promotion_state", row.model_name, row.version,
                        before=loggable({k: before[k] for k in audited}), after={"promotion": row.id,
                                                                                  **loggable(audited)},
                        status_since_ms=since)
            if "status" in changed:
                publish_promotion(self.context, session, row, row.status)
            return promotion_view(row)

    def record_sign_off(
        self, approver: Actor, promotion_id: object, *, approvals: Sequence[dict[str, Any]], comment: str
    ) -> Promotion:
        """Audit one approver's sign-off (actor = the approver, with the roles and groups they signed with) and
        store the approvals so far."""
        with self._db.write() as session:
            row = promotion_row(session, promotion_id, lock=True)
            earlier = session.exec(
                select(AuditEventRow.after).where(
                    col(AuditEventRow.model_name) == row.model_name, col(AuditEventRow.version) == row.version,
                    col(AuditEventRow.action) == "sign_off_promotion", col(AuditEventRow.actor) == approver.name,
                )
            ).all()
            at = str(approvals[-1].get("at", "")) if approvals else ""
            if any(json.loads(after).get("promotion") == row.id and json.loads(after).get("at", "") == at
                   for after in earlier):
                return promotion_view(row)
            row.approvals = json.dumps(list(approvals))
            row.last_updated_timestamp = self._clock()
            session.add(row)
            self._audit(session, approver, "sign_off_promotion", row.model_name, row.version,
                        after={"promotion": row.id, "comment": comment, "roles": sorted(approver.roles),
                               "groups": sorted(approver.groups), "at": at, "evidence_hash": row.evidence_hash})
            publish_promotion(self.context, session, row, "signed_off", approver=approver.name, comment=comment)
            return promotion_view(row)

    def apply_promotion(
        self,
        actor: Actor,
        promotion_id: object,
        *,
        expected_incumbent: int | None,
        description: str | None,
        approvers: Sequence[str],
        validation_date: str,
        policy_hash: str,
    ) -> Promotion:
        """Perform an approved promotion in one transaction; applying twice changes nothing.

        Refused (409 INVALID_STATE) unless the candidate is the version row and digest the promotion was
        requested for and its evidence, recomputed here under ``policy_hash``, is what the checks ran on.
        """
        with self._db.write() as session:
            promotion = promotion_row(session, promotion_id, lock=True)
            if promotion.status == PromotionStatus.PROMOTED:
                return promotion_view(promotion)
            if promotion.status in TERMINAL_STATUSES:
                raise InvalidParameterError(f"Promotion {promotion.id} is {promotion.status}; it cannot be applied.")
            model = self._model(session, promotion.model_name, actor=actor, need=EDIT, lock=True)
            candidate = self._version(session, model, promotion.version)
            check_binding(session, promotion, candidate, policy_hash)
            eligible = ELIGIBLE_SOURCE_STAGES[(promotion.kind, promotion.target_stage)]
            check_eligible(candidate, promotion.target_stage, eligible, promotion.kind)
            current = production_version(session, model)
            if promotion.target_stage == PRODUCTION and current != expected_incumbent:
                raise StaleEvidenceError(
                    f"Production of {model.name} is version {current}, not {expected_incumbent} as when the "
                    "checks ran; the comparison must be re-run."
                )
            apply_transition(self.context, session, actor, model, candidate, promotion, description=description,
                             approvers=approvers, validation_date=validation_date)
            return promotion_view(promotion)
