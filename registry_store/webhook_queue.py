"""WebhookQueue: the dispatchers' side of the outbox, safe with any number of them.

A dispatcher *claims* due deliveries: one statement sets its lease on them (``FOR UPDATE SKIP LOCKED``
on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises claimers). Only the oldest undelivered
delivery of each (webhook, model) is due, so a model's events arrive in order. The claim counts the
attempt and logs it as in flight; ``record_attempt`` fills it in and decides what follows (delivered,
retried later, failed for good, dead). A dispatcher that dies leaves its lease to expire: the next claim
logs the lost attempt as interrupted and sends again with the same delivery id. ``prune_delivered``
deletes what the retention period has passed for: delivered deliveries, their attempts, and events
nothing else refers to; undelivered ones stay (they can still be resent).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Connection, and_, delete, exists, func, insert, select, update
from sqlalchemy.orm import aliased

from policies.webhooks import RetryPolicy, is_final_status, next_delay_s
from registry_store.audit import append_event
from registry_store.context import ServiceBase
from registry_store.tables import NotificationRow, WebhookAttemptRow, WebhookDeliveryRow, WebhookEventRow, WebhookRow
from registry_store.users import SYSTEM_ACTOR
from registry_store.webhook_outbox import ACTIVE, DEAD, DELIVERED, FAILED, PAUSED, PENDING, publish_event

__all__ = ["AttemptResult", "DeliveryClaim", "WebhookQueue"]

IN_FLIGHT = "in flight"
INTERRUPTED = "interrupted: the dispatcher stopped before the answer was recorded"
EXCERPT_BYTES = 1024
PRUNE_BATCH = 500
MAX_PRUNE_BATCHES = 200

_D = WebhookDeliveryRow.__table__  # type: ignore[attr-defined]
_W = WebhookRow.__table__  # type: ignore[attr-defined]
_E = WebhookEventRow.__table__  # type: ignore[attr-defined]
_A = WebhookAttemptRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class DeliveryClaim:
    """One leased delivery and what sending it needs."""

    delivery_id: str
    webhook_id: str
    attempt: int
    event: str
    payload: str
    url: str
    secret: str
    payload_format: str
    template: str


@dataclass(frozen=True)
class AttemptResult:
    """How one attempt went: an HTTP status (with ``Retry-After`` seconds) or an error, and how long it took."""

    latency_ms: int
    status_code: int | None = None
    error: str = ""
    response_excerpt: str = ""
    retry_after_s: float | None = None
    final: bool = False
    """The attempt must not be retried whatever happened (e.g. a refused address)."""


class WebhookQueue(ServiceBase):
    """Claim due deliveries under a lease and record their attempts."""

    def claim(self, owner: str, *, limit: int, lease_ms: int) -> list[DeliveryClaim]:
        """Lease up to ``limit`` due deliveries (the oldest undelivered one per webhook and model) to ``owner``."""
        now = self._clock()
        earlier = aliased(_D)
        due = (
            select(_D.c.id).join(_W, _W.c.id == _D.c.webhook_id)
            .where(_W.c.status == ACTIVE, _D.c.status == PENDING, _D.c.next_attempt_at <= now,
                   (_D.c.lease_until.is_(None)) | (_D.c.lease_until < now),
                   ~exists().where(and_(earlier.c.webhook_id == _D.c.webhook_id,
                                        earlier.c.model_name == _D.c.model_name,
                                        earlier.c.status == PENDING, earlier.c.event_id < _D.c.event_id)))
            .order_by(_D.c.event_id).limit(limit)
        )
        if self._db.is_postgres:
            due = due.with_for_update(of=_D, skip_locked=True)
        with self._db.write_connection() as connection:
            claimed = connection.execute(
                update(_D).where(_D.c.id.in_(due.scalar_subquery()))
                .values(lease_owner=owner, lease_until=now + lease_ms, attempts=_D.c.attempts + 1,
                        last_updated_timestamp=now)
                .returning(_D.c.id, _D.c.attempts)
            ).all()
            if not claimed:
                return []
            ids = [row.id for row in claimed]
            connection.execute(update(_A).where(_A.c.delivery_id.in_(ids), _A.c.error == IN_FLIGHT)
                               .values(error=INTERRUPTED))
            connection.execute(insert(_A), [{"delivery_id": row.id, "attempt": row.attempts, "started_at": now,
                                             "status_code": None, "error": IN_FLIGHT, "latency_ms": 0,
                                             "response_excerpt": ""} for row in claimed])
            details = connection.execute(
                select(_D.c.id, _D.c.webhook_id, _D.c.attempts, _E.c.event, _E.c.payload, _W.c.url, _W.c.secret,
                       _W.c.payload_format, _W.c.template)
                .join(_E, _E.c.id == _D.c.event_id).join(_W, _W.c.id == _D.c.webhook_id)
                .where(_D.c.id.in_(ids)).order_by(_D.c.event_id)
            ).all()
        secrets = self.context.secrets
        return [DeliveryClaim(delivery_id=row.id, webhook_id=row.webhook_id, attempt=row.attempts, event=row.event,
                              payload=row.payload, url=row.url,
                              secret=secrets.open(row.secret) if secrets is not None and row.secret else "",
                              payload_format=row.payload_format, template=row.template) for row in details]

    def prune_delivered(self, *, older_than_ms: int) -> int:
        """Delete deliveries delivered before now − ``older_than_ms`` (by their event's time) with their attempts,
        and events left without deliveries; how many deliveries. In short transactions of ``PRUNE_BATCH``."""
        cutoff = self._clock() - older_than_ms
        old = select(_E.c.id).where(_E.c.created_at < cutoff)
        pruned = 0
        for _ in range(MAX_PRUNE_BATCHES):
            with self._db.write_connection() as connection:
                ids = connection.execute(select(_D.c.id).where(_D.c.status == DELIVERED, _D.c.event_id.in_(old))
                                         .limit(PRUNE_BATCH)).scalars().all()
                if ids:
                    connection.execute(delete(_A).where(_A.c.delivery_id.in_(ids)))
                    connection.execute(delete(_D).where(_D.c.id.in_(ids)))
                else:
                    connection.execute(delete(_E).where(_E.c.created_at < cutoff,
                                                        ~exists().where(_D.c.event_id == _E.c.id)))
            if not ids:
                break
            pruned += len(ids)
        return pruned

    def record_attempt(self, owner: str, claim: DeliveryClaim, result: AttemptResult, policy: RetryPolicy) -> str:
        """Log the attempt and move the delivery on; the delivery's status afterwards.

        A delivery whose lease ``owner`` lost meanwhile only gets its attempt logged. Failures count
        against the subscription: ``policy.pause_after`` in a row over ``policy.pause_period_s`` pause it.
        """
        now = self._clock()
        ok = result.status_code is not None and 200 <= result.status_code < 300
        with self._db.write_connection() as connection:
            connection.execute(
                update(_A).where(_A.c.delivery_id == claim.delivery_id, _A.c.attempt == claim.attempt)
                .values(status_code=result.status_code, error=result.error[:EXCERPT_BYTES],
                        latency_ms=result.latency_ms,
                        response_excerpt=result.response_excerpt.encode()[:EXCERPT_BYTES].decode(errors="ignore"))
            )
            status, next_at = self._next(claim, result, ok, policy, now)
            moved = connection.execute(
                update(_D).where(_D.c.id == claim.delivery_id, _D.c.lease_owner == owner)
                .values(status=status, next_attempt_at=next_at, lease_owner=None, lease_until=None,
                        last_updated_timestamp=now)
            ).rowcount
            if moved:
                self._count(connection, claim.webhook_id, ok, policy, now)
            return status if moved else PENDING

    @staticmethod
    def _next(claim: DeliveryClaim, result: AttemptResult, ok: bool, policy: RetryPolicy, now: int) -> tuple[str, int]:
        if ok:
            return DELIVERED, now
        if result.final or (result.status_code is not None and (is_final_status(result.status_code)
                                                               or 300 <= result.status_code < 400)):
            return FAILED, now
        delay = next_delay_s(policy, claim.attempt, result.retry_after_s)
        return (DEAD, now) if delay is None else (PENDING, now + int(delay * 1000))

    def _count(self, connection: Connection, webhook_id: str, ok: bool, policy: RetryPolicy, now: int) -> None:
        """Track the subscription's failures in a row; pause it (and tell its owner) when they persist."""
        if ok:
            connection.execute(update(_W).where(_W.c.id == webhook_id, _W.c.consecutive_failures > 0)
                               .values(consecutive_failures=0, failing_since=None))
            return
        row = connection.execute(
            update(_W).where(_W.c.id == webhook_id)
            .values(consecutive_failures=_W.c.consecutive_failures + 1,
                    failing_since=func.coalesce(_W.c.failing_since, now))
            .returning(_W.c.consecutive_failures, _W.c.failing_since, _W.c.status, _W.c.owner, _W.c.name, _W.c.url)
        ).one()
        if row.status != ACTIVE or row.consecutive_failures < policy.pause_after \
                or now - row.failing_since < policy.pause_period_s * 1000:
            return
        connection.execute(update(_W).where(_W.c.id == webhook_id).values(status=PAUSED, last_updated_timestamp=now))
        facts = {"webhook_id": webhook_id, "name": row.name, "url": row.url, "owner": row.owner,
                 "consecutive_failures": row.consecutive_failures, "failing_since": row.failing_since}
        append_event(connection, actor=SYSTEM_ACTOR, action="pause_webhook", timestamp=now,
                     subject=f"webhook:{webhook_id}", after=facts)
        publish_event(connection, "webhook.paused", "", facts, now)
        text = (f"Webhook '{row.name}' ({row.url}) was paused after {row.consecutive_failures} failed deliveries in a "
                "row; its events wait. Resume it with status ACTIVE once the receiver works.")
        connection.execute(insert(NotificationRow.__table__).values(  # type: ignore[attr-defined]
            timestamp=now, kind="webhook_paused", promotion_id="", model_name="",
            recipients=json.dumps([row.owner, "admins"]), body=text, delivery="{}", event_key=None))
