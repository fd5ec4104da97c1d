"""A promotion is bound to the exact candidate: the reproduced attacks, each through the real services.

Each test replays an attack that used to succeed and fails if it still does: the model
replaced under a waiting promotion (2), renames that move what ``models:/A/Production``
loads (3), and evidence changed after the checks passed (4). MLflow routes are called
through the real app (ASGI, no network) so the error JSON is what a client sees.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from calabi.api.app import create_app
from calabi.engine import PromotionService
from policies.status import PromotionStatus
from registry_store.errors import InvalidStateError, PermissionDeniedError
from tests.workflows.conftest import Harness, describe
from tests.workflows.test_replay import replayer

S = PromotionStatus
MLFLOW = "/api/2.0/mlflow"
NEW_SCHEMA = '{"inputs": "[{\\"type\\": \\"string\\", \\"name\\": \\"customer_id\\"}]", "outputs": "[]"}'


class Mlflow:
    """MLflow REST calls as one user, through the real app."""

    def __init__(self, client: httpx.AsyncClient, h: Harness) -> None:
        self._client = client
        self._h = h

    def token(self, *roles: str) -> str:
        _, token = self._h.services.users.create_user(self._h.admin, name=f"u-{secrets.token_hex(3)}",
                                                      roles=list(roles))
        return token

    async def call(self, token: str, method: str, path: str, body: dict[str, Any]) -> httpx.Response:
        return await self.api(token, method, f"{MLFLOW}/{path}", body)

    async def api(self, token: str, method: str, path: str, body: dict[str, Any]) -> httpx.Response:
        """Any route of the app (the background tasks have run when the response returns)."""
        return await self._client.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})


async def app_client(h: Harness, promotions: PromotionService) -> AsyncIterator[Mlflow]:
    """The real app over ``h``'s services, its promotion engine replaced by ``promotions``."""
    transport = httpx.ASGITransport(app=create_app(dataclasses.replace(h.services, promotions=promotions)))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield Mlflow(client, h)


@pytest_asyncio.fixture
async def mlflow(harness: Harness) -> AsyncIterator[Mlflow]:
    """The app talking to the test Temporal server (as the harness's own PromotionService does)."""
    async for client in app_client(harness, harness.promotions):
        yield client


@pytest_asyncio.fixture
async def unreachable(harness: Harness) -> AsyncIterator[Mlflow]:
    """The app with Temporal unreachable from it (the worker still runs)."""

    async def refuse() -> Client:
        raise OSError("connection refused (test)")

    async for client in app_client(harness, PromotionService(harness.registry, refuse, task_queue=harness.task_queue)):
        yield client


def refused(response: httpx.Response, status: int, code: str, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code
    assert all(w in body["message"] for w in words), body["message"]


def new_model(h: Harness, *, stage: str = "Staging") -> str:
    """A model whose v1 is in ``stage`` and nothing is in Production."""
    name = f"churn-{secrets.token_hex(4)}"
    h.registry.models.create_registered_model(h.requester, name=name)
    h.add_version(name, auc=0.9, log_loss=0.4)
    h.registry.stages.transition_stage(h.requester, name=name, version=1, stage=stage)
    return name


# ------------------------------------------------------------------------------ attack 2


async def test_model_under_a_waiting_promotion_cannot_be_deleted_renamed_or_replaced(
        harness: Harness, mlflow: Mlflow) -> None:
    h = harness
    model = new_model(h)
    reviewed = h.version(model, 1)
    promotion = await h.request(model=model, version=1)
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    engineer = mlflow.token("engineer")

    refused(await mlflow.call(engineer, "DELETE", "registered-models/delete", {"name": model}),
            409, "INVALID_STATE", promotion.id)
    refused(await mlflow.call(engineer, "POST", "registered-models/rename", {"name": model, "new_name": "away"}),
            409, "INVALID_STATE", promotion.id)
    refused(await mlflow.call(engineer, "DELETE", "model-versions/delete", {"name": model, "version": "1"}),
            409, "INVALID_STATE", promotion.id)
    with pytest.raises(InvalidStateError, match=promotion.id):  # not even an admin, while it is live
        h.registry.models.delete_registered_model(h.admin, model)

    await h.decide(h.approver, promotion, "sign_off", "reviewed")
    assert (await h.outcome(promotion)).status == S.PROMOTED
    promoted = h.version(model, 1)
    assert (promoted.current_stage, promoted.digest, promoted.tags["validated_by"]) == (
        "Production", reviewed.digest, h.approver.name)
    assert h.read(promotion).candidate_digest == reviewed.digest
    with pytest.raises(PermissionDeniedError, match="ci.tests_passed"):  # what the sign-off saw stays
        h.registry.versions.set_model_version_tag(h.requester, name=model, version=1, key="ci.tests_passed",
                                                  value="false")


async def test_a_replaced_candidate_is_never_applied(harness: Harness) -> None:
    h = harness
    model = new_model(h)
    promotion = await h.request(model=model, version=1)
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    with sqlite3.connect(h.services.settings.database_url.removeprefix("sqlite:///")) as db:
        # What a delete-and-recreate would leave: same name and number, another row.
        db.execute("UPDATE promotions SET candidate_id = candidate_id + 1000 WHERE id = ?", (promotion.id,))

    await h.decide(h.approver, promotion, "sign_off", "reviewed")

    outcome = await h.outcome(promotion)
    assert outcome.status == S.FAILED and "no longer the version" in outcome.message
    assert h.version(model, 1).current_stage == "Staging" and "validated_by" not in h.version(model, 1).tags


# ------------------------------------------------------------------------------ attack 3


async def test_renames_cannot_move_production_without_break_glass(harness: Harness, mlflow: Mlflow) -> None:
    h = harness
    a, b = h.register(), h.register()
    a_production = h.version(a, 1)
    engineer = mlflow.token("engineer")

    refused(await mlflow.call(engineer, "POST", "registered-models/rename", {"name": a, "new_name": f"{a}-old"}),
            403, "PERMISSION_DENIED", "break-glass")
    refused(await mlflow.call(engineer, "POST", "registered-models/rename", {"name": b, "new_name": f"{b}-x"}),
            403, "PERMISSION_DENIED", "break-glass")
    assert h.registry.versions.get_latest_versions(h.viewer, name=a, stages=["Production"])[0].digest == (
        a_production.digest)

    champion_only = new_model(h)
    h.registry.aliases.set_alias(h.admin, name=champion_only, alias="champion", version=1)
    with pytest.raises(PermissionDeniedError, match="protected alias"):
        h.registry.models.rename_registered_model(h.requester, name=champion_only, new_name=f"{champion_only}-x")

    h.registry.models.rename_registered_model(h.admin, name=a, new_name=f"{a}-old")
    [event] = [e for e in h.audit(f"{a}-old") if e.action == "rename_registered_model"]
    moved = {"version": 1, "digest": a_production.digest}
    assert event.after["break_glass"] is True
    assert event.before["resolves"] == {f"models:/{a}/Production": moved, f"models:/{a}-old/Production": None}
    assert event.after["resolves"] == {f"models:/{a}/Production": None, f"models:/{a}-old/Production": moved}


# ------------------------------------------------------------------------------ attack 4


async def test_evidence_changed_after_the_checks_voids_sign_offs_and_reruns_them(harness: Harness) -> None:
    h = harness
    model = h.register()
    promotion = await h.request(model=model)
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)

    with pytest.raises(PermissionDeniedError, match="ci.tests_passed"):  # the checked attestation is governed
        h.registry.versions.set_model_version_tag(h.requester, name=model, version=2, key="ci.tests_passed",
                                                  value="false")
    h.registry.versions.update_model_version(h.requester, name=model, version=2,
                                             description=describe(0.91, 0.38, date_range=False))
    h.registry.schemas.set_serving_schema(h.requester, model=model, signature=NEW_SCHEMA)
    await h.decide(h.approver, promotion, "sign_off", "all green when I looked")

    state = await h.wait_for(promotion, S.CHECKS_FAILED)
    assert state.approvals == [] and h.read(promotion).approvals == []
    voided = next(c.note for c in state.history if "evidence changed" in c.note)
    assert "description" in voided and "serving_schema" in voided and h.approver.name in voided
    assert not state.checklist or not state.checklist.passed
    assert "evidence_changed" in [n.kind for n in h.notifications(promotion)]
    assert (h.version(model, 2).current_stage, h.version(model, 1).current_stage) == ("Staging", "Production")
    assert "validated_by" not in h.version(model, 2).tags


async def test_evidence_changed_without_any_sign_off_is_noticed_at_the_next_reminder(harness: Harness) -> None:
    h = harness
    model = h.register()
    rule = h.stage_policy(model).sign_off
    assert rule is not None
    promotion = await h.request(model=model)
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    h.registry.versions.update_model_version(h.requester, name=model, version=2,
                                             description=describe(0.91, 0.38, date_range=False))

    await h.skip(rule.reminder_every)

    state = await h.wait_for(promotion, S.CHECKS_FAILED)
    assert any("evidence changed" in c.note and "description" in c.note for c in state.history)
    assert state.checklist is not None and not state.checklist.passed


def test_apply_refuses_evidence_changed_inside_its_transaction(harness: Harness) -> None:
    h = harness
    model = h.register()
    promotion = h.registry.promotions.open_promotion(h.requester, model=model, version=2, target_stage="Production",
                                                     justification="beats Production")
    policy_hash = "p" * 64
    h.registry.promotions.promotion_subject(h.admin, promotion.id, tag_keys=["ci.tests_passed"],
                                            policy_hash=policy_hash)
    h.registry.versions.update_model_version(h.requester, name=model, version=2, description="changed")

    with pytest.raises(InvalidStateError, match="description"):
        h.registry.promotions.apply_promotion(h.admin, promotion.id, expected_incumbent=1, description=None,
                                              approvers=[h.approver.name], validation_date="2026-12-06",
                                              policy_hash=policy_hash)
    with pytest.raises(InvalidStateError, match="policy"):  # a policy change voids the evidence too
        h.registry.promotions.apply_promotion(h.admin, promotion.id, expected_incumbent=1, description=None,
                                              approvers=[h.approver.name], validation_date="2026-12-06",
                                              policy_hash="q" * 64)
    assert h.version(model, 2).current_stage == "Staging"


def test_governance_tags_are_written_by_the_engine_or_a_break_glass_admin(harness: Harness) -> None:
    h = harness
    model = h.register()
    for key in ("validated_by", "validation_date"):
        with pytest.raises(PermissionDeniedError, match=key):
            h.registry.versions.set_model_version_tag(h.requester, name=model, version=2, key=key, value="me")
    with pytest.raises(PermissionDeniedError, match="governance"):
        h.registry.registration.create_model_version(
            h.requester, name=model, source=str(h.artifact(auc=0.9, log_loss=0.4)), tags=[("validated_by", "me")])

    h.registry.versions.set_model_version_tag(h.admin, name=model, version=2, key="validated_by", value="admin")
    event = [e for e in h.audit(model) if e.action == "set_model_version_tag"][-1]
    assert event.after == {"validated_by": "admin", "break_glass": True}


# ------------------------------------------------------------------------------ told at once

SLOW_REMINDERS = '[production.sign_off]\nreminder_every = "6d"\n'
"""No reminder during a test that never skips time: only the registry's signal can wake the sign-off wait."""
NOTICE_S = 10.0
"""Real seconds a promotion gets to leave awaiting_sign_off after the signal (activities are ~50 ms hops)."""


async def awaiting(h: Harness) -> tuple[str, Any]:
    """A model with slow reminders and its promotion, all checks passed and awaiting sign-off."""
    model = h.register()
    h.override(model, SLOW_REMINDERS)
    promotion = await h.request(model=model)
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    return model, promotion


async def wait_until_verified(h: Harness, promotion: Any) -> None:
    """Wait (bounded) until the workflow has re-verified the evidence after a signal, without a sign-off."""
    deadline = time.monotonic() + NOTICE_S
    while True:
        events = (await h.handle(promotion).fetch_history()).events
        signaled = next((i for i, e in enumerate(events)  # the server may buffer it during a workflow task
                         if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED), len(events))
        verifies = {e.event_id for e in events[signaled:]
                    if e.activity_task_scheduled_event_attributes.activity_type.name == "verify_evidence"}
        if any(e.activity_task_completed_event_attributes.scheduled_event_id in verifies for e in events):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"no signal and re-verification of the evidence within {NOTICE_S} s")
        await asyncio.sleep(0.05)  # polling a condition with a deadline


async def test_a_description_edit_through_the_api_voids_the_checks_at_once(harness: Harness, mlflow: Mlflow) -> None:
    h = harness
    model, promotion = await awaiting(h)

    edited = await mlflow.api(mlflow.token("engineer"), "PATCH", f"/api/v1/models/{model}/versions/2",
                              {"description": describe(0.91, 0.38, date_range=False)})

    assert edited.status_code == 200, edited.text
    state = await h.wait_for(promotion, S.CHECKS_FAILED, timeout=NOTICE_S)  # no sign-off, no reminder, no skip
    assert state.reminders_sent == 0 and state.approvals == []
    assert any("evidence changed" in c.note and "description" in c.note for c in state.history)
    assert "evidence_changed" in [n.kind for n in h.notifications(promotion)]
    assert state.checklist is not None and not state.checklist.passed
    await replayer().replay_workflow(await h.handle(promotion).fetch_history())  # the signal path is deterministic


async def test_a_checked_tag_set_through_mlflow_voids_the_checks_at_once(harness: Harness, mlflow: Mlflow) -> None:
    h = harness
    model, promotion = await awaiting(h)
    admin = mlflow.token("admin")  # the attestation tag is governed while checked: break-glass

    untouched = await mlflow.call(admin, "POST", "model-versions/set-tag",
                                  {"name": model, "version": "2", "key": "owner", "value": "churn-team"})
    assert untouched.status_code == 200, untouched.text
    await wait_until_verified(h, promotion)
    assert (await h.state(promotion)).status == S.AWAITING_SIGN_OFF  # a tag the policy does not read: still valid
    retagged = await mlflow.call(admin, "POST", "model-versions/set-tag",
                                 {"name": model, "version": "2", "key": "ci.tests_passed", "value": "false"})

    assert retagged.status_code == 200, retagged.text
    state = await h.wait_for(promotion, S.CHECKS_FAILED, timeout=NOTICE_S)
    assert state.reminders_sent == 0
    assert any("evidence changed" in c.note and "(tags)" in c.note for c in state.history)
    assert "evidence_changed" in [n.kind for n in h.notifications(promotion)]
    await replayer().replay_workflow(await h.handle(promotion).fetch_history())


async def test_with_temporal_unreachable_the_edit_succeeds_and_the_next_sign_off_catches_it(
        harness: Harness, unreachable: Mlflow) -> None:
    h = harness
    model, promotion = await awaiting(h)

    edited = await unreachable.api(unreachable.token("engineer"), "PATCH", f"/api/v1/models/{model}/versions/2",
                                   {"description": describe(0.91, 0.38, date_range=False)})
    schema = await unreachable.api(unreachable.token("engineer"), "PUT", f"/api/v1/models/{model}/serving-schema",
                                   {"signature": NEW_SCHEMA})

    assert (edited.status_code, schema.status_code) == (200, 204), (edited.text, schema.text)
    assert (await h.state(promotion)).status == S.AWAITING_SIGN_OFF  # nobody told the workflow
    await h.decide(h.approver, promotion, "sign_off", "all green when I looked")  # the backstop
    state = await h.wait_for(promotion, S.CHECKS_FAILED)
    voided = next(c.note for c in state.history if "evidence changed" in c.note)
    assert "description" in voided and "serving_schema" in voided and h.approver.name in voided
    assert state.approvals == [] and h.version(model, 2).current_stage == "Staging"
