"""The webhook outbox against a real database (SQLite and PostgreSQL): events only with their change,
Calabi's promotion/stage/break-glass events, leases and per-model order with two dispatchers, pausing,
redelivery, secrets at rest."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from policies.webhooks import RetryPolicy
from registry_store.errors import AlreadyExistsError, PermissionDeniedError
from registry_store.service import RegistryService
from registry_store.webhook_queue import AttemptResult
from tests.integration.helpers import DATABASES, Clock, Registry, build_registry, database_url

POLICY = RetryPolicy(base_s=1, cap_s=10, max_attempts=5, pause_after=2, pause_period_s=0)
DOWN = AttemptResult(latency_ms=3, status_code=503, response_excerpt="down", retry_after_s=30)
UP = AttemptResult(latency_ms=3, status_code=200, response_excerpt="ok")


@pytest.fixture(params=DATABASES)
def reg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    registry = build_registry(tmp_path, database_url(request, tmp_path))
    yield registry
    registry.services.close()


def events(reg: Registry, webhook_id: str) -> list[tuple[str, dict[str, object]]]:
    """(event, data) of a webhook's deliveries, oldest first."""
    rows = reg.rows("SELECT e.event, e.payload FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id "
                    "WHERE d.webhook_id = :w ORDER BY e.id", w=webhook_id)
    return [(event, json.loads(payload)["data"]) for event, payload in rows]


def test_outbox_events_leases_order_pause_and_redelivery(reg: Registry) -> None:
    clock = Clock()
    svc = RegistryService(replace(reg.svc.context, clock=clock))
    with pytest.raises(PermissionDeniedError):
        svc.webhooks.create_webhook(reg.engineer, name="x", url="http://hooks.example/x", events=["webhook.paused"])
    hook = svc.webhooks.create_webhook(
        reg.admin, name="governance", url="http://hooks.example/a", secret="s3cret", payload_format="slack",
        events=["registered_model.created", "model_version_stage.transitioned", "break_glass.used",
                "promotion.requested", "promotion.awaiting_sign_off", "promotion.signed_off", "promotion.failed"],
    )
    stored = reg.scalar("SELECT secret FROM webhooks WHERE id = :i", i=hook.id)
    assert stored and "s3cret" not in stored and hook.has_secret
    assert svc.webhooks.target(reg.admin, hook.id).secret == "s3cret"

    svc.models.create_registered_model(reg.engineer, name="churn")
    with pytest.raises(AlreadyExistsError):  # rolled back: no event without its change
        svc.models.create_registered_model(reg.engineer, name="churn")
    for _ in range(2):
        svc.registration.create_model_version(reg.engineer, name="churn", source=str(reg.artifact()))
    svc.stages.transition_stage(reg.engineer, name="churn", version=1, stage="Staging")
    svc.stages.transition_stage(reg.admin, name="churn", version=2, stage="Production")  # break glass
    promotion = svc.promotions.open_promotion(reg.engineer, model="churn", version=1, target_stage="Production",
                                              justification="better")
    svc.promotions.record_promotion_state(reg.engineer, promotion.id, status="awaiting_sign_off")
    svc.promotions.record_sign_off(reg.approver, promotion.id, approvals=[{"by": "approver-user", "at": "t"}],
                                   comment="fine")
    svc.promotions.close_promotion(reg.admin, promotion.id, reason="workflow gone")
    svc.models.create_registered_model(reg.engineer, name="other")

    published = events(reg, hook.id)
    assert [e for e, _ in published] == [
        "registered_model.created", "model_version_stage.transitioned", "model_version_stage.transitioned",
        "break_glass.used", "promotion.requested", "promotion.awaiting_sign_off", "promotion.signed_off",
        "promotion.failed", "registered_model.created"]
    moves = [data for event, data in published if event == "model_version_stage.transitioned"]
    assert moves[1]["to_stage"] == "Production" and moves[1]["break_glass"] is True
    requested = dict(published[4][1])
    assert requested["promotion_url"] == f"{reg.svc.context.public_url}/ui/promotions/{promotion.id}"

    # Two dispatchers: only the oldest undelivered event of each model is due, and each is leased once.
    first = svc.webhook_queue.claim("a", limit=50, lease_ms=60_000)
    assert [(c.event, json.loads(c.payload)["data"]["name"]) for c in first] == [
        ("registered_model.created", "churn"), ("registered_model.created", "other")]
    assert first[0].secret == "s3cret" and first[0].attempt == 1
    assert svc.webhook_queue.claim("b", limit=50, lease_ms=60_000) == []
    assert svc.webhook_queue.record_attempt("a", first[1], UP, POLICY) == "delivered"
    assert svc.webhook_queue.record_attempt("a", first[0], DOWN, POLICY) == "pending"
    assert svc.webhook_queue.claim("b", limit=50, lease_ms=60_000) == [], "churn waits for its first event"
    clock.now += 30_000  # Retry-After honoured
    again = svc.webhook_queue.claim("b", limit=50, lease_ms=60_000)
    assert [(c.delivery_id, c.attempt) for c in again] == [(first[0].delivery_id, 2)]
    clock.now += 61_000  # b died: its lease expires and a resumes with the same delivery id
    resumed = svc.webhook_queue.claim("a", limit=50, lease_ms=60_000)
    assert [(c.delivery_id, c.attempt) for c in resumed] == [(first[0].delivery_id, 3)]
    assert svc.webhook_queue.record_attempt("b", again[0], UP, POLICY) == "pending", "a lost lease records nothing"
    assert svc.webhook_queue.record_attempt("a", resumed[0], DOWN, POLICY) == "pending"
    log = svc.webhooks.list_deliveries(reg.admin, hook.id, delivery_id=first[0].delivery_id)[0]
    assert [(a.attempt, a.status_code, a.error.split(":")[0]) for a in log.attempt_log] == [
        (1, 503, ""), (2, 200, ""), (3, 503, "")]  # the late answer is logged; the delivery stays a's

    # Two failures in a row pause the subscription, record why and tell its owner; resuming sends at once.
    assert svc.webhooks.get_webhook(reg.admin, hook.id).status == "PAUSED"
    assert reg.scalar("SELECT count(*) FROM notifications WHERE kind = 'webhook_paused'") == 1
    assert reg.scalar("SELECT count(*) FROM audit_events WHERE action = 'pause_webhook'") == 1
    assert svc.webhook_queue.claim("a", limit=50, lease_ms=60_000) == []
    svc.webhooks.update_webhook(reg.admin, hook.id, status="ACTIVE")
    assert [c.attempt for c in svc.webhook_queue.claim("a", limit=50, lease_ms=60_000)] == [4]

    # Redelivery of a time range queues delivered events again (same ids).
    queued = svc.webhooks.redeliver(reg.admin, hook.id, since=0, until=clock.now)
    assert queued == 1  # "other"'s event; churn's is still pending
    assert reg.scalar("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'") == len(published)

    # Retention: delivered deliveries older than the period go with their attempts and events; the rest stay.
    for claim in svc.webhook_queue.claim("a", limit=50, lease_ms=60_000):
        svc.webhook_queue.record_attempt("a", claim, UP, POLICY)
    delivered = reg.scalar("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'")
    assert 0 < delivered < len(published)  # churn's later events wait for its first: still undelivered
    assert svc.webhook_queue.prune_delivered(older_than_ms=clock.now) == 0, "nothing is that old"
    clock.now += 1
    assert svc.webhook_queue.prune_delivered(older_than_ms=0) == delivered
    assert reg.scalar("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'") == 0
    assert reg.scalar("SELECT count(*) FROM webhook_deliveries") == len(published) - delivered
    assert reg.scalar("SELECT count(*) FROM webhook_events") == len(published) - delivered
    assert reg.scalar("SELECT count(*) FROM webhook_attempts WHERE delivery_id NOT IN "
                      "(SELECT id FROM webhook_deliveries)") == 0
