"""PromotionWorkflow end to end on the time-skipping server: real activities, real registry on SQLite.

Each test drives one behaviour through ``PromotionService`` (the client side the API and
the CLI use) and checks the workflow's live state, the registry's read model, the outbox
and the audit log. Separation-of-duties refusals are checked twice: by the service (as
the API sees them) and by the workflow itself (an update sent straight to the handle).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.notify import Notifier
from activities.promotion import PromotionActivities
from policies.checklist import configured_checks
from policies.loading import load_policy
from policies.status import PromotionStatus
from registry_store.entities import AuditEvent, Promotion
from registry_store.errors import ConflictError, InvalidParameterError, PermissionDeniedError
from tests.workflows.conftest import POLL_S, WAIT_S, Harness, describe, reminders_expected, wait_until
from workflows.models import ApplyInput, Decision
from workflows.promotion import PromotionWorkflow

S = PromotionStatus


# ------------------------------------------------------------------------------ helpers


def events_of(h: Harness, model: str, promotion: Promotion, action: str) -> list[AuditEvent]:
    """Audit events of ``action`` that name ``promotion``."""
    return [e for e in h.audit(model)
            if e.action == action and isinstance(e.after, dict) and e.after.get("promotion") == promotion.id]


def stages(h: Harness, model: str, *numbers: int) -> tuple[str, ...]:
    return tuple(h.version(model, n).current_stage for n in numbers)


async def workflow_refuses(h: Harness, promotion: Promotion, update: Any, decision: Decision) -> str:
    """Send an update straight to the workflow (bypassing the registry's checks); its refusal message."""
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await h.handle(promotion).execute_update(update, decision)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError)
    return cause.message


def as_decision(actor: Any, comment: str = "") -> Decision:
    return Decision(user=actor.name, roles=sorted(actor.roles), comment=comment)


async def pending_activity(h: Harness, promotion: Promotion, *activity_types: str | None) -> None:
    """Wait (bounded) until the workflow's pending activities are exactly ``activity_types``, each started
    (None: none pending)."""
    handle = h.handle(promotion)
    wanted = sorted((name, PendingActivityState.PENDING_ACTIVITY_STATE_STARTED) for name in activity_types if name)
    deadline = time.monotonic() + WAIT_S
    while True:
        pending = (await handle.describe()).raw_description.pending_activities
        names = sorted((p.activity_type.name, p.state) for p in pending)
        if names == wanted:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"pending activities {names}, not the started {activity_types!r}, after {WAIT_S} s")
        await asyncio.sleep(POLL_S)  # polling a condition with a deadline


@contextlib.contextmanager
def write_lock(h: Harness) -> Iterator[Callable[[], None]]:
    """Hold SQLite's write lock from another connection (BEGIN IMMEDIATE) until release() or the block ends."""
    path = h.services.settings.resolved_database_url().removeprefix("sqlite:///")
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("BEGIN IMMEDIATE")
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            connection.execute("ROLLBACK")
            released = True

    try:
        yield release
    finally:
        release()
        connection.close()


@contextlib.contextmanager
def database_fault(h: Harness, *, table: str, operation: str, when: str) -> Iterator[Callable[[], None]]:
    """A real SQLite error on ``operation`` of ``table`` rows matching ``when`` until lift() or the block ends.

    A trigger raises ``injected transient fault``; the failed statement's transaction rolls
    back as it would on any database error. No component of ours is replaced.
    """
    ddl = (
        "CREATE TABLE IF NOT EXISTS test_faults (name TEXT PRIMARY KEY)",
        f"INSERT INTO test_faults VALUES ('{table}')",
        f"CREATE TRIGGER test_fault_{table} BEFORE {operation} ON {table} "
        f"WHEN ({when}) AND EXISTS (SELECT 1 FROM test_faults WHERE name = '{table}') "
        "BEGIN SELECT RAISE(ABORT, 'injected transient fault'); END",
    )
    with h.services.db.engine.begin() as connection:
        for statement in ddl:
            connection.execute(text(statement))

    def lift() -> None:
        with h.services.db.engine.begin() as connection:
            connection.execute(text("DELETE FROM test_faults WHERE name = :name"), {"name": table})

    try:
        yield lift
    finally:
        lift()


async def failed_attempt(h: Harness, promotion: Promotion, activity_type: str) -> str:
    """Wait (bounded) until a pending ``activity_type`` has failed an attempt; the failure message."""
    handle = h.handle(promotion)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        description = await handle.describe()
        for pending in description.raw_description.pending_activities:
            if pending.activity_type.name == activity_type and pending.HasField("last_failure"):
                return str(pending.last_failure.message)
        await asyncio.sleep(POLL_S)  # polling a condition with a deadline
    pytest.fail(f"no failed attempt of {activity_type} within {WAIT_S} s")


async def recheck_window_open(h: Harness, promotion: Promotion) -> None:
    """Wait until the workflow waits for a re-check (its deadline is recorded once it does)."""
    await wait_until(lambda: h.read(promotion).deadline is not None, "the re-check window")


QUORUM_OF_TWO = "[production.sign_off]\napprovers = 2\n"


# ------------------------------------------------------------------------------ 1 happy path


async def test_happy_path_promotes_candidate_and_archives_incumbent(harness: Harness) -> None:
    h = harness
    model = h.register()
    promotion = await h.request(model=model)

    waiting = await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    assert waiting.checklist is not None and waiting.checklist.passed
    assert [r.name for r in waiting.checklist.results] == configured_checks(h.stage_policy(model))
    assert waiting.incumbent_version == 1 and waiting.required_approvals == 1
    assert waiting.policy_hash == load_policy(h.policy_dir, model).content_hash

    signed = await h.decide(h.approver, promotion, "sign_off", "numbers look right")
    assert [a.user for a in signed.approvals] == [h.approver.name]
    outcome = await h.outcome(promotion)

    assert outcome.status == S.PROMOTED
    assert stages(h, model, 1, 2) == ("Archived", "Production")
    candidate = h.version(model, 2)
    assert candidate.aliases == ["champion"]
    assert h.registry.aliases.get_version_by_alias(h.viewer, name=model, alias="champion").version == 2
    assert f"Validated by {h.approver.name} on " in candidate.description
    assert "auc 0.91 vs 0.85 (Production v1)" in candidate.description
    assert candidate.description.startswith(describe(0.91, 0.38))
    assert candidate.tags["validated_by"] == h.approver.name
    date.fromisoformat(candidate.tags["validation_date"])
    read = h.read(promotion)
    assert (read.status, read.live) == ("promoted", False)
    assert [a["user"] for a in read.approvals] == [h.approver.name]
    assert [e.actor for e in events_of(h, model, promotion, "sign_off_promotion")] == [h.approver.name]
    [transition] = events_of(h, model, promotion, "transition_stage")
    assert transition.after["approved_by"] == [h.approver.name] and transition.after["archived"] == [1]
    assert [n.kind for n in h.notifications(promotion)] == ["requested", "awaiting", "promoted"]
    assert h.registry.audit.verify_audit_chain(h.viewer).ok


# ------------------------------------------------------------------------------ 2 reminders, expiry


async def test_unsigned_promotion_sends_reminders_then_expires(harness: Harness) -> None:
    h = harness
    model = h.register()
    rule = h.stage_policy(model).sign_off
    assert rule is not None
    promotion = await h.request(model=model)
    waiting = await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    awaiting_at = next(c.at for c in waiting.history if c.status == S.AWAITING_SIGN_OFF)
    assert waiting.deadline == awaiting_at + rule.expires_after and waiting.reminders_sent == 0

    await h.skip(rule.reminder_every * 2 + rule.reminder_every / 2)  # virtual time
    midway = await h.state(promotion)
    assert (midway.status, midway.reminders_sent) == (S.AWAITING_SIGN_OFF, 2)

    await h.skip(rule.expires_after)
    outcome = await h.outcome(promotion)

    assert outcome.status == S.EXPIRED
    reminders = reminders_expected(h.stage_policy(model))
    final = await h.state(promotion)
    assert final.reminders_sent == reminders > 2
    assert final.history[-1].status == S.EXPIRED
    assert rule.expires_after <= final.history[-1].at - awaiting_at < rule.expires_after + rule.reminder_every
    read = h.read(promotion)
    assert (read.status, read.live, read.reminders_sent) == ("expired", False, reminders)
    kinds = [n.kind for n in h.notifications(promotion)]
    assert kinds == ["requested", "awaiting", *["reminder"] * reminders, "expired"]
    assert stages(h, model, 1, 2) == ("Production", "Staging")


# ------------------------------------------------------------------------------ 3 quorum


async def test_quorum_needs_two_distinct_approvers(harness: Harness) -> None:
    h = harness
    model = f"quorum-{secrets.token_hex(4)}"
    h.override(model, QUORUM_OF_TWO)
    h.register(model)
    promotion = await h.request(model=model)
    waiting = await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    assert waiting.required_approvals == h.stage_policy(model).approvers_needed == 2

    first = await h.decide(h.approver, promotion, "sign_off", "first")
    assert first.status == S.AWAITING_SIGN_OFF and [a.user for a in first.approvals] == [h.approver.name]
    with pytest.raises(ConflictError, match="already signed off"):
        await h.decide(h.approver, promotion, "sign_off", "me again")
    still = await h.state(promotion)
    assert still.status == S.AWAITING_SIGN_OFF and len(still.approvals) == 1

    await h.decide(h.approver2, promotion, "sign_off", "second")
    outcome = await h.outcome(promotion)

    assert outcome.status == S.PROMOTED
    assert h.version(model, 2).tags["validated_by"] == f"{h.approver.name}, {h.approver2.name}"
    assert [e.actor for e in events_of(h, model, promotion, "sign_off_promotion")] == [
        h.approver.name, h.approver2.name]


async def sign_off_during_reminder(h: Harness) -> tuple[str, Promotion]:
    """Sign off while the first reminder is being delivered; virtual time then runs to mid-window.

    The reminder's outbox write is held up by a real SQLite write lock taken from another
    connection, so the sign-off lands exactly between the reminder and its state record.
    """
    model = h.register()
    rule = h.stage_policy(model).sign_off
    assert rule is not None
    promotion = await h.request(model=model)
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    await wait_until(lambda: [n.kind for n in h.notifications(promotion)] == ["requested", "awaiting"])
    await pending_activity(h, promotion, None)  # parked on the reminder timer

    with write_lock(h) as release:
        skipping = asyncio.create_task(h.skip(rule.reminder_every + rule.reminder_every / 2))
        await pending_activity(h, promotion, "notify")  # the reminder, blocked on the lock
        # The sign-off is answered once recorded (patch decisions-recorded): its record waits for the lock too.
        deciding = asyncio.create_task(h.decide(h.approver, promotion, "sign_off", "signed while reminded"))
        await pending_activity(h, promotion, "notify", "record_sign_off")
        release()
        signed = await deciding
        assert signed.reminders_sent == 1 and [a.user for a in signed.approvals] == [h.approver.name]
        await skipping
    return model, promotion


async def test_sign_off_arriving_during_a_reminder_is_acted_on_at_once(harness: Harness) -> None:
    """The quorum was met half a reminder period ago: the promotion must not wait for the next reminder."""
    h = harness
    _, promotion = await sign_off_during_reminder(h)

    state = await h.state(promotion)
    assert state.status == S.PROMOTED, (
        f"{state.status} with {len(state.approvals)}/{state.required_approvals} approvals half a day after the "
        "sign-off: the workflow sleeps until the next reminder")


async def test_sign_off_arriving_during_a_reminder_is_audited(harness: Harness) -> None:
    """That sign-off still gets its own audit event under the approver's name."""
    h = harness
    model, promotion = await sign_off_during_reminder(h)
    rule = h.stage_policy(model).sign_off
    assert rule is not None
    await h.skip(rule.reminder_every)  # lets the promotion finish even where it waits for the next reminder
    outcome = await h.outcome(promotion)

    assert outcome.status == S.PROMOTED
    assert [e.actor for e in events_of(h, model, promotion, "sign_off_promotion")] == [h.approver.name]
    assert [a["user"] for a in h.read(promotion).approvals] == [h.approver.name]


# ------------------------------------------------------------------------------ 4, 5 who may sign off


async def test_requester_cannot_sign_off_even_with_approver_role(harness: Harness) -> None:
    h = harness
    model = h.register()
    promotion = await h.request(h.dual, model=model)  # h.dual holds engineer + approver
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)

    with pytest.raises(PermissionDeniedError, match="separation of duties"):
        await h.decide(h.dual, promotion, "sign_off")
    assert "requested this promotion" in await workflow_refuses(
        h, promotion, PromotionWorkflow.sign_off, as_decision(h.dual))
    shouted = Decision(user=f"  {h.dual.name.upper()} ", roles=["approver"])
    assert "requested this promotion" in await workflow_refuses(h, promotion, PromotionWorkflow.sign_off, shouted)

    state = await h.state(promotion)
    assert state.status == S.AWAITING_SIGN_OFF and state.approvals == []
    assert h.read(promotion).approvals == []


@pytest.mark.parametrize("who", ["stranger", "viewer"])
async def test_non_approver_cannot_sign_off(harness: Harness, who: str) -> None:
    h = harness
    actor = getattr(h, who)
    model = h.register()
    promotion = await h.request(model=model)
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)

    with pytest.raises(PermissionDeniedError, match="'approver' role"):
        await h.decide(actor, promotion, "sign_off")
    assert "the 'approver' role is required" in await workflow_refuses(
        h, promotion, PromotionWorkflow.sign_off, as_decision(actor))

    state = await h.state(promotion)
    assert state.status == S.AWAITING_SIGN_OFF and state.approvals == []


# ------------------------------------------------------------------------------ 6 reject


async def test_reject_needs_a_reason_and_leaves_registry_untouched(harness: Harness) -> None:
    h = harness
    model = h.register()
    promotion = await h.request(model=model)
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)

    with pytest.raises(InvalidParameterError, match="A rejection needs a reason"):
        await h.decide(h.approver, promotion, "reject", "   ")
    assert (await h.state(promotion)).status == S.AWAITING_SIGN_OFF

    await h.decide(h.approver, promotion, "reject", "holdout window overlaps training data")
    outcome = await h.outcome(promotion)

    assert outcome.status == S.REJECTED
    assert "holdout window overlaps training data" in outcome.message
    read = h.read(promotion)
    assert (read.status, read.live) == ("rejected", False)
    assert stages(h, model, 1, 2) == ("Production", "Staging")
    assert h.version(model, 2).aliases == [] and "validated_by" not in h.version(model, 2).tags
    assert events_of(h, model, promotion, "transition_stage") == []
    [notice] = [n for n in h.notifications(promotion) if n.kind == "rejected"]
    assert "holdout window overlaps training data" in notice.body


async def test_rejection_notice_names_the_rejecter(harness: Harness) -> None:
    """One approver signed off, another rejects: the notice must not name the first as the rejecter."""
    h = harness
    model = f"quorum-{secrets.token_hex(4)}"
    h.override(model, QUORUM_OF_TWO)
    h.register(model)
    promotion = await h.request(model=model)
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    await h.decide(h.approver, promotion, "sign_off", "fine by me")
    await h.decide(h.approver2, promotion, "reject", "guardrail too loose")
    assert (await h.outcome(promotion)).status == S.REJECTED

    [notice] = [n for n in h.notifications(promotion) if n.kind == "rejected"]
    assert f"was rejected by {h.approver.name}" not in notice.body, notice.body
    assert f"was rejected by {h.approver2.name}" in notice.body, notice.body


# ------------------------------------------------------------------------------ 7 cancel


async def test_requester_cancels_and_stranger_cannot(harness: Harness) -> None:
    h = harness
    model = h.register()
    promotion = await h.request(model=model)
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)

    with pytest.raises(PermissionDeniedError, match="Only the requester"):
        await h.decide(h.stranger, promotion, "cancel", "not yours")
    assert "or an admin may cancel" in await workflow_refuses(
        h, promotion, PromotionWorkflow.cancel, as_decision(h.stranger))
    assert (await h.state(promotion)).status == S.AWAITING_SIGN_OFF

    await h.decide(h.requester, promotion, "cancel", "found a bug")
    outcome = await h.outcome(promotion)

    assert outcome.status == S.CANCELLED
    assert (h.read(promotion).status, h.read(promotion).live) == ("cancelled", False)
    assert stages(h, model, 1, 2) == ("Production", "Staging")


async def test_cancellation_is_announced(harness: Harness) -> None:
    """Every terminal status the workflow reaches is notified (the workflow sends notify(<status>))."""
    h = harness
    model = h.register()
    promotion = await h.request(model=model)
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    await h.decide(h.requester, promotion, "cancel", "found a bug")
    assert (await h.outcome(promotion)).status == S.CANCELLED

    assert [n.kind for n in h.notifications(promotion)][-1] == "cancelled"


# ------------------------------------------------------------------------------ 8 re-check


async def test_failed_description_check_then_recheck_after_fix(harness: Harness) -> None:
    h = harness
    model = h.register(candidate_description=describe(0.91, 0.38, date_range=False))
    promotion = await h.request(model=model)

    failed = await h.wait_for(promotion, S.CHECKS_FAILED)
    assert failed.checklist is not None and not failed.checklist.passed
    assert [r.name for r in failed.checklist.results if not r.passed] == ["description"]
    description = failed.checklist.result("description")
    assert description is not None and any("date range" in reason for reason in description.reasons)
    assert failed.history[-1].note.startswith("description: ")
    read = h.read(promotion)
    assert read.status == "checks_failed" and read.checklist["passed"] is False
    assert "description: " in read.message
    assert [r["name"] for r in read.checklist["results"] if not r["passed"]] == ["description"]
    await recheck_window_open(h, promotion)
    assert [n.kind for n in h.notifications(promotion)] == ["requested", "checks_failed"]
    with pytest.raises(PermissionDeniedError):
        await h.decide(h.stranger, promotion, "recheck")

    h.registry.versions.update_model_version(h.requester, name=model, version=2, description=describe(0.91, 0.38))
    await h.decide(h.requester, promotion, "recheck", "added the date range")

    passed = await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    assert passed.checklist is not None and passed.checklist.passed
    assert [c.status for c in passed.history] == [
        S.RUNNING_CHECKS, S.CHECKS_FAILED, S.RUNNING_CHECKS, S.AWAITING_SIGN_OFF]


async def test_failed_checks_expire_when_nobody_rechecks(harness: Harness) -> None:
    h = harness
    model = h.register(candidate_description=describe(0.91, 0.38, date_range=False))
    rule = h.stage_policy(model).sign_off
    assert rule is not None
    promotion = await h.request(model=model)
    await h.wait_for(promotion, S.CHECKS_FAILED)
    await recheck_window_open(h, promotion)

    await h.skip(rule.expires_after + rule.reminder_every)  # virtual time
    outcome = await h.outcome(promotion)

    assert outcome.status == S.EXPIRED
    assert (h.read(promotion).status, h.read(promotion).live) == ("expired", False)
    assert [n.kind for n in h.notifications(promotion)] == ["requested", "checks_failed", "expired"]
    assert stages(h, model, 1, 2) == ("Production", "Staging")


async def test_recheck_requested_while_failure_is_being_announced_is_not_lost(harness: Harness) -> None:
    """A re-check accepted while the checks_failed notice is still being delivered must run the checks.

    The notice's first delivery attempt fails on a real database error, so the re-check
    provably lands after the failure was recorded and before the workflow waits for it.
    """
    h = harness
    model = h.register(candidate_description=describe(0.91, 0.38, date_range=False))
    with database_fault(h, table="notifications", operation="INSERT", when="NEW.kind = 'checks_failed'") as lift:
        promotion = await h.request(model=model)
        assert "injected transient fault" in await failed_attempt(h, promotion, "notify")
        assert h.read(promotion).status == "checks_failed"
        h.registry.versions.update_model_version(h.requester, name=model, version=2, description=describe(0.91, 0.38))
        accepted = await h.decide(h.requester, promotion, "recheck", "added the date range")
        assert accepted.status == S.RUNNING_CHECKS
        lift()
    await h.skip(timedelta(minutes=5))  # virtual; the checks take well under a second of it

    state = await h.state(promotion)
    assert state.status == S.AWAITING_SIGN_OFF, (
        f"{state.status} after the accepted re-check: the workflow still waits for a re-check "
        f"({[(c.status.value, c.note) for c in state.history]})")


# ------------------------------------------------------------------------------ 9 Production changed


async def test_production_changed_to_better_version_fails_the_rerun_comparison(harness: Harness) -> None:
    h = harness
    model = h.register()
    h.add_version(model, auc=0.95, log_loss=0.37)
    promotion = await h.request(model=model)
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    h.registry.stages.transition_stage(h.admin, name=model, version=3, stage="Production")  # break-glass

    await h.decide(h.approver, promotion, "sign_off")
    failed = await h.wait_for(promotion, S.CHECKS_FAILED)

    assert failed.incumbent_version == 3
    assert any("re-running the comparison" in c.note for c in failed.history)
    metrics = failed.checklist.result("metrics") if failed.checklist else None
    assert metrics is not None and not metrics.passed
    assert any("does not beat Production v3" in reason for reason in metrics.reasons)
    assert stages(h, model, 1, 2, 3) == ("Archived", "Staging", "Production")
    assert events_of(h, model, promotion, "transition_stage") == []


async def test_production_changed_to_worse_version_promotes_against_new_incumbent(harness: Harness) -> None:
    h = harness
    model = h.register()
    h.add_version(model, auc=0.80, log_loss=0.39)
    promotion = await h.request(model=model)
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    h.registry.stages.transition_stage(h.admin, name=model, version=3, stage="Production")  # break-glass

    await h.decide(h.approver, promotion, "sign_off")
    outcome = await h.outcome(promotion)

    assert outcome.status == S.PROMOTED
    assert stages(h, model, 1, 2, 3) == ("Archived", "Production", "Archived")
    final = await h.state(promotion)
    assert final.incumbent_version == 3
    assert any("re-running the comparison" in c.note for c in final.history)
    assert "vs 0.8 (Production v3)" in h.version(model, 2).description
    [transition] = events_of(h, model, promotion, "transition_stage")
    assert transition.after["archived"] == [3]


# ------------------------------------------------------------------------------ 10 apply exactly once

async def test_apply_retried_after_transient_database_failure_applies_once(harness: Harness) -> None:
    """A real database error fails the first apply attempt; the retry applies, exactly once, nothing partial."""
    h = harness
    model = h.register()
    promotion = await h.request(model=model)
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)

    with database_fault(h, table="model_versions", operation="UPDATE OF current_stage",
                        when="NEW.current_stage = 'Production'") as lift:
        await h.decide(h.approver, promotion, "sign_off")
        assert "injected transient fault" in await failed_attempt(h, promotion, "apply_promotion")
        assert stages(h, model, 1, 2) == ("Production", "Staging")  # the failed attempt left nothing behind
        lift()
        outcome = await h.outcome(promotion)

    assert outcome.status == S.PROMOTED
    assert stages(h, model, 1, 2) == ("Archived", "Production")
    assert len(events_of(h, model, promotion, "transition_stage")) == 1
    assert len(events_of(h, model, promotion, "set_alias")) == 1
    assert h.version(model, 2).description.count("Validated by") == 1
    assert h.registry.audit.verify_audit_chain(h.viewer).ok


async def test_apply_activity_run_twice_changes_the_registry_once(harness: Harness) -> None:
    """At-least-once delivery: a second run of the same apply (lost completion) is a no-op."""
    h = harness
    model = h.register()
    promotion = h.registry.promotions.open_promotion(h.requester, model=model, version=2, target_stage="Production",
                                          justification="direct activity test")
    activities = PromotionActivities(h.registry, h.services.artifacts, h.policy_dir, Notifier(h.registry))
    apply = ApplyInput(promotion_id=promotion.id, expected_incumbent=1, approvers=[h.approver.name],
                       validated_on=datetime(2026, 11, 29, 12, tzinfo=UTC))
    env = ActivityEnvironment()
    env.info = dataclasses.replace(ActivityEnvironment.default_info(), workflow_id=promotion.workflow_id,
                                   activity_type="apply_promotion")

    env.run(activities.apply_promotion, apply)
    after_first = [(e.action, e.version, e.after) for e in h.audit(model)]
    env.info = dataclasses.replace(env.info, attempt=2)
    env.run(activities.apply_promotion, apply)

    assert [(e.action, e.version, e.after) for e in h.audit(model)] == after_first
    assert stages(h, model, 1, 2) == ("Archived", "Production")
    assert h.version(model, 2).description.count("Validated by") == 1
    assert h.read(promotion).status == "promoted"


# ------------------------------------------------------------------------------ 11 Staging


async def test_staging_promotion_needs_no_sign_off(harness: Harness) -> None:
    h = harness
    model = h.register()
    h.add_version(model, auc=0.92, log_loss=0.37)
    policy = h.stage_policy(model, "staging")
    assert policy.approvers_needed == 0
    promotion = await h.request(model=model, version=3, target="Staging")

    outcome = await h.outcome(promotion)

    assert outcome.status == S.PROMOTED
    assert h.version(model, 3).current_stage == "Staging"
    assert h.version(model, 1).current_stage == "Production"
    final = await h.state(promotion)
    assert final.required_approvals == 0 and final.approvals == []
    assert final.checklist is not None
    assert [r.name for r in final.checklist.results] == configured_checks(policy)
    assert S.AWAITING_SIGN_OFF not in [c.status for c in final.history]
    assert [n.kind for n in h.notifications(promotion)] == ["requested", "promoted"]


async def test_staging_promotion_notice_does_not_claim_production_was_archived(harness: Harness) -> None:
    h = harness
    model = h.register()
    h.add_version(model, auc=0.92, log_loss=0.37)
    promotion = await h.request(model=model, version=3, target="Staging")
    assert (await h.outcome(promotion)).status == S.PROMOTED

    [notice] = [n for n in h.notifications(promotion) if n.kind == "promoted"]
    assert h.version(model, 1).current_stage == "Production"
    assert "was archived" not in notice.body, notice.body


# ------------------------------------------------------------------------------ 12 rollback


async def test_rollback_repromotes_previous_production_version(harness: Harness) -> None:
    h = harness
    model = h.register()
    first = await h.request(model=model)
    await h.wait_for(first, S.AWAITING_SIGN_OFF)
    await h.decide(h.approver, first, "sign_off")
    assert (await h.outcome(first)).status == S.PROMOTED

    rollback = await h.rollback(h.requester, model=model)
    assert (rollback.kind, rollback.version, rollback.target_stage) == ("rollback", 1, "Production")
    waiting = await h.wait_for(rollback, S.AWAITING_SIGN_OFF)
    policy = h.stage_policy(model, "rollback")
    assert policy.sign_off is not None
    assert waiting.required_approvals == policy.approvers_needed == 1
    assert waiting.checklist is not None and waiting.checklist.passed
    assert [r.name for r in waiting.checklist.results] == configured_checks(policy)
    awaiting_at = next(c.at for c in waiting.history if c.status == S.AWAITING_SIGN_OFF)
    assert waiting.deadline == awaiting_at + policy.sign_off.expires_after

    await h.decide(h.approver2, rollback, "sign_off", "roll back")
    outcome = await h.outcome(rollback)

    assert outcome.status == S.PROMOTED
    assert stages(h, model, 1, 2) == ("Production", "Archived")
    assert h.registry.aliases.get_version_by_alias(h.viewer, name=model, alias="champion").version == 1
    assert h.version(model, 1).tags["validated_by"] == h.approver2.name
    assert h.registry.audit.verify_audit_chain(h.viewer).ok
