"""Post-implementation reviews: an admin's break-glass move into Production is reviewed afterwards.

The move opens the review in its own transaction (``open_review``, called by ``StageService``) under the
model's ``[production.break_glass]`` policy; a holder of the policy's reviewer role who is not the admin
who broke the glass completes it. Overdue is derived when read: still open after ``due_at``, or escalated
by its workflow (``workflows/review.py``), which reminds the reviewers and escalates to admins.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from sqlmodel import Session, col, select

from policies.decisions import same_person
from policies.errors import PolicyError
from policies.loading import load_policy
from policies.models import BreakGlassRule
from registry_store.audit import Actor
from registry_store.context import ServiceBase
from registry_store.entities import PostImplementationReview, ReviewStatus
from registry_store.errors import InvalidParameterError, InvalidStateError, NotFoundError, PermissionDeniedError
from registry_store.tables import PostImplementationReviewRow, UserRow
from registry_store.users import expand_roles, require_role

__all__ = ["OUTCOMES", "REVIEW_STATUSES", "ReviewService", "break_glass_rule", "open_review", "review_view"]

log = logging.getLogger(__name__)
OUTCOMES = ("accepted", "rollback_required")
"""``accepted``: the emergency change stands; ``rollback_required``: it must be undone (by a promotion)."""
REVIEW_STATUSES: tuple[ReviewStatus, ...] = ("open", "overdue", "completed")
OPEN: Literal["open"] = "open"
COMPLETED: Literal["completed"] = "completed"
MAX_NOTE = 10_000
MAX_REVIEWS = 1000


def break_glass_rule(policy_dir: Path | None, model_name: str) -> BreakGlassRule | None:
    """The model's break-glass review rule (None: its policy opens no review).

    A policy that does not load never blocks an emergency change: the review is opened under the
    default rule and the problem is logged.
    """
    if policy_dir is None:
        return BreakGlassRule()
    try:
        return load_policy(policy_dir, model_name).policy.production.break_glass_review()
    except PolicyError as exc:
        log.warning("break-glass review of %s opened under the default rule: %s", model_name, exc)
        return BreakGlassRule()


def open_review(
    session: Session, actor: Actor, *, model_name: str, version: int, reason: str, rule: BreakGlassRule, now: int,
) -> int:
    """Open the review of a break-glass move in the caller's transaction; returns its id.

    The move's own audit event records the review (one event per mutation)."""
    row = PostImplementationReviewRow(
        model_name=model_name, version=version, admin=actor.name, reason=reason, opened_at=now,
        due_at=now + int(rule.review_within.total_seconds() * 1000),
        reminder_every_s=int(rule.reminder_every.total_seconds()), reviewer_role=rule.reviewer_role,
    )
    session.add(row)
    session.flush()
    assert row.id is not None
    return row.id


class ReviewService(ServiceBase):
    """Read, complete and escalate post-implementation reviews."""

    def list_reviews(self, actor: Actor, *, status: object = None, model: object = None
                     ) -> list[PostImplementationReview]:
        """Reviews, most urgent first. ``status``: ``open`` (every uncompleted one, overdue included),
        ``overdue`` or ``completed``; ``model`` a model name."""
        require_role(actor, "viewer", "read post-implementation reviews")
        wanted = _status_filter(status)
        query = select(PostImplementationReviewRow)
        if wanted is not None:
            query = query.where(col(PostImplementationReviewRow.status) == (COMPLETED if wanted == COMPLETED else OPEN))
        if model:
            query = query.where(col(PostImplementationReviewRow.model_name) == str(model))
        if wanted == "overdue":
            now = self._clock()
            query = query.where((col(PostImplementationReviewRow.due_at) <= now)
                                | col(PostImplementationReviewRow.escalated_at).is_not(None))
        order = (col(PostImplementationReviewRow.completed_at).desc() if wanted == COMPLETED
                 else col(PostImplementationReviewRow.due_at))
        with self._db.read() as session:
            rows = session.exec(query.order_by(order, col(PostImplementationReviewRow.id)).limit(MAX_REVIEWS)).all()
        now = self._clock()
        return [review_view(r, now) for r in rows]

    def get_review(self, actor: Actor, review_id: object) -> PostImplementationReview:
        """One review."""
        require_role(actor, "viewer", "read post-implementation reviews")
        with self._db.read() as session:
            return review_view(_row(session, _review_id(review_id)), self._clock())

    def reviews_by_id(self, session: Session, ids: Iterable[int]) -> dict[int, PostImplementationReview]:
        """The reviews with ``ids``, read in the caller's session."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        rows = session.exec(select(PostImplementationReviewRow)
                            .where(col(PostImplementationReviewRow.id).in_(wanted))).all()
        now = self._clock()
        return {r.id: review_view(r, now) for r in rows if r.id is not None}

    def complete_review(self, actor: Actor, review_id: object, *, outcome: object, note: object = ""
                        ) -> PostImplementationReview:
        """Complete a review: a holder of its reviewer role who is not the admin who broke the glass."""
        number = _review_id(review_id)
        if outcome not in OUTCOMES:
            raise InvalidParameterError(f"Invalid outcome {outcome!r}: one of {', '.join(OUTCOMES)}.")
        text = _note(note)
        with self._db.write() as session:
            row = _row(session, number, lock=True)
            require_role(actor, row.reviewer_role, "complete a post-implementation review")
            if same_person(actor.name, row.admin):
                raise PermissionDeniedError(
                    f"User '{actor.name}' broke the glass for {row.model_name} v{row.version} and may not review "
                    "that change: another reviewer must complete it.")
            if row.status == COMPLETED:
                raise InvalidStateError(f"Review {number} was completed by {row.completed_by} already.")
            now = self._clock()
            row.status, row.completed_by, row.completed_at, row.outcome, row.note = (
                COMPLETED, actor.name, now, str(outcome), text)
            session.add(row)
            session.flush()
            self._audit(session, actor, "complete_review", row.model_name, row.version,
                        before={"review": number, "status": OPEN},
                        after={"review": number, "status": COMPLETED, "outcome": row.outcome, "note": text},
                        timestamp=now)
            return review_view(row, now)

    def escalate_review(self, actor: Actor, review_id: object) -> PostImplementationReview:
        """Record that the review's deadline passed while it was open (once; a completed review is left alone)."""
        require_role(actor, "admin", "escalate a post-implementation review")
        number = _review_id(review_id)
        with self._db.write() as session:
            row = _row(session, number, lock=True)
            now = self._clock()
            if row.status == OPEN and row.escalated_at is None:
                row.escalated_at = now
                session.add(row)
                session.flush()
                self._audit(session, actor, "escalate_review", row.model_name, row.version,
                            after={"review": number, "due_at": row.due_at}, timestamp=now)
            return review_view(row, now)

    def unescalated_reviews(self, actor: Actor, *, model: str | None = None) -> list[PostImplementationReview]:
        """Open reviews not escalated yet (of ``model``, or all): each should have a running workflow."""
        require_role(actor, "viewer", "read post-implementation reviews")
        query = select(PostImplementationReviewRow).where(
            col(PostImplementationReviewRow.status) == OPEN, col(PostImplementationReviewRow.escalated_at).is_(None))
        if model is not None:
            query = query.where(col(PostImplementationReviewRow.model_name) == model)
        with self._db.read() as session:
            rows = session.exec(query.order_by(col(PostImplementationReviewRow.id)).limit(MAX_REVIEWS)).all()
        now = self._clock()
        return [review_view(r, now) for r in rows]

    def people_with_role(self, actor: Actor, role: str) -> list[str]:
        """The names of the users holding ``role`` (directly or implied): a notification's recipients."""
        require_role(actor, "viewer", "read post-implementation reviews")
        with self._db.read() as session:
            users = session.exec(select(UserRow.name, UserRow.roles).order_by(col(UserRow.name))).all()
        return [name for name, roles in users if role in expand_roles(r for r in roles.split(",") if r)]


def review_view(row: PostImplementationReviewRow, now: int) -> PostImplementationReview:
    """The public view of a review row; overdue is derived against ``now``."""
    assert row.id is not None
    status: ReviewStatus = COMPLETED if row.status == COMPLETED else (
        "overdue" if row.escalated_at is not None or row.due_at <= now else OPEN)
    return PostImplementationReview(
        id=row.id, model_name=row.model_name, version=row.version, admin=row.admin, reason=row.reason,
        opened_at=row.opened_at, due_at=row.due_at, reminder_every_s=row.reminder_every_s,
        reviewer_role=row.reviewer_role, status=status, escalated_at=row.escalated_at,
        completed_by=row.completed_by, completed_at=row.completed_at, outcome=row.outcome, note=row.note,
    )


def _row(session: Session, review_id: int, *, lock: bool = False) -> PostImplementationReviewRow:
    query = select(PostImplementationReviewRow).where(col(PostImplementationReviewRow.id) == review_id)
    row = session.exec(query.with_for_update() if lock else query).first()
    if row is None:
        raise NotFoundError(f"Post-implementation review {review_id} not found.")
    return row


def _review_id(value: object) -> int:
    text = str(value).strip()
    if not text.isdigit() or len(text) > 18:
        raise InvalidParameterError(f"Invalid review id {value!r}: a positive integer.")
    return int(text)


def _status_filter(value: object) -> Literal["open", "overdue", "completed"] | None:
    if value in (None, ""):
        return None
    for status in REVIEW_STATUSES:
        if value == status:
            return status
    raise InvalidParameterError(f"Invalid review status {value!r}: one of {', '.join(REVIEW_STATUSES)}.")


def _note(value: object) -> str:
    text = "" if value is None else str(value)
    if len(text) > MAX_NOTE:
        raise InvalidParameterError(f"A review note is at most {MAX_NOTE} characters.")
    return text
