"""Replay gate: stored PromotionWorkflow histories must replay on the current workflow code.

``histories/*.json`` were recorded from real runs (real activities, time-skipping server)
of the happy path, the expiry path, the checks-failed-then-recheck path, (since the
``evidence-binding`` patch) the evidence-changed-under-a-sign-off path, (since the ``check-error``
patch) a check that could not run, paused in check_error and re-checked, (``happy_path_heavy_queue``,
since the ``heavy-queue`` patch) the happy path with the model evidence step on the heavy queue, and (since
the ``group-quorum`` patch) a quorum of two groups filled by a churn lead and someone in both groups, and (since
the ``decisions-recorded`` patch) a sign-off and a cancellation each answered once recorded. A change to
the workflow that would break promotions already running in production (different
commands in a different order without ``workflow.patched``) fails ``test_stored_history_replays``.

The scenarios also run on every test run and their fresh histories must replay; with
``RECORD_HISTORIES=1`` they overwrite the stored files (do that only for a new,
deliberately incompatible workflow version, and keep the old files for as long as runs of
the old version can still be open).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from policies.status import PromotionStatus
from tests.workflows.conftest import Harness, describe, wait_until
from tests.workflows.test_check_error import check_error_then_recheck
from tests.workflows.test_group_quorum import approver
from workflows.promotion import PromotionWorkflow

S = PromotionStatus
HISTORIES = Path(__file__).parent / "histories"
RECORD = os.environ.get("RECORD_HISTORIES") == "1"
TWO_GROUPS = ('[[production.sign_off.from]]\ngroup = "churn-leads"\ncount = 1\n'
              '[[production.sign_off.from]]\ngroup = "model-risk"\ncount = 1\n')


def replayer() -> Replayer:
    return Replayer(workflows=[PromotionWorkflow], data_converter=pydantic_data_converter)


async def happy_path(h: Harness) -> WorkflowHistory:
    model = h.register()
    promotion = await h.request(model=model)
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    await h.decide(h.approver, promotion, "sign_off", "numbers look right")
    assert (await h.outcome(promotion)).status == S.PROMOTED
    return await h.handle(promotion).fetch_history()


async def expiry(h: Harness) -> WorkflowHistory:
    model = h.register()
    rule = h.stage_policy(model).sign_off
    assert rule is not None
    promotion = await h.request(model=model)
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    await h.skip(rule.expires_after + rule.reminder_every)
    assert (await h.outcome(promotion)).status == S.EXPIRED
    return await h.handle(promotion).fetch_history()


async def checks_failed_then_recheck(h: Harness) -> WorkflowHistory:
    model = h.register(candidate_description=describe(0.91, 0.38, date_range=False))
    promotion = await h.request(model=model)
    await h.wait_for(promotion, S.CHECKS_FAILED)
    # A re-check sent before the workflow waits for one is lost (see the workflow tests): wait for the window.
    await wait_until(lambda: h.read(promotion).deadline is not None, "the re-check window")
    h.registry.versions.update_model_version(h.requester, name=model, version=2, description=describe(0.91, 0.38))
    await h.decide(h.requester, promotion, "recheck", "added the date range")
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    await h.decide(h.approver, promotion, "sign_off")
    assert (await h.outcome(promotion)).status == S.PROMOTED
    return await h.handle(promotion).fetch_history()


async def evidence_changed(h: Harness) -> WorkflowHistory:
    """The evidence changes under a sign-off (patch ``evidence-binding``): voided, re-checked, fixed, promoted."""
    model = h.register()
    promotion = await h.request(model=model)
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    h.registry.versions.update_model_version(h.requester, name=model, version=2,
                                             description=describe(0.91, 0.38, date_range=False))
    await h.decide(h.approver, promotion, "sign_off")
    await h.wait_for(promotion, S.CHECKS_FAILED)
    await wait_until(lambda: h.read(promotion).deadline is not None, "the re-check window")
    h.registry.versions.update_model_version(h.requester, name=model, version=2, description=describe(0.91, 0.38))
    await h.decide(h.requester, promotion, "recheck", "restored the date range")
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    await h.decide(h.approver, promotion, "sign_off")
    assert (await h.outcome(promotion)).status == S.PROMOTED
    return await h.handle(promotion).fetch_history()


async def check_error(h: Harness) -> WorkflowHistory:
    """A test run that cannot run (patch ``check-error``): check_error, re-checked, signed off, promoted."""
    promotion = await check_error_then_recheck(h)
    await h.decide(h.approver, promotion, "sign_off")
    assert (await h.outcome(promotion)).status == S.PROMOTED
    return await h.handle(promotion).fetch_history()


async def group_quorum(h: Harness) -> WorkflowHistory:
    """A quorum per group (patch ``group-quorum``): a churn lead, then a member of both groups fills model-risk."""
    model = f"churn-{secrets.token_hex(4)}"
    h.override(model, TWO_GROUPS)
    h.register(model)
    promotion = await h.request(model=model)
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    await h.decide(approver(h, "churn-lead", "churn-leads"), promotion, "sign_off")
    await h.decide(approver(h, "both", "churn-leads", "model-risk"), promotion, "sign_off")
    assert (await h.outcome(promotion)).status == S.PROMOTED
    return await h.handle(promotion).fetch_history()


async def decisions_recorded(h: Harness) -> WorkflowHistory:
    """Decisions answered once recorded (patch ``decisions-recorded``): a read right after each one shows it.

    A rejection of one promotion; then a sign-off (of two needed) and a cancellation of another, whose history this is.
    """
    rejected = await h.request(model=h.register())
    await h.wait_for(rejected, S.AWAITING_SIGN_OFF)
    await h.decide(h.approver, rejected, "reject", "not this quarter")
    assert h.read(rejected).status == S.REJECTED
    model = f"churn-{secrets.token_hex(4)}"
    h.override(model, TWO_GROUPS)
    h.register(model)
    promotion = await h.request(model=model)
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    lead = approver(h, "churn-lead", "churn-leads")
    await h.decide(lead, promotion, "sign_off")
    assert [a["user"] for a in h.read(promotion).approvals] == [lead.name]
    await h.decide(h.requester, promotion, "cancel", "wrong candidate")
    assert h.read(promotion).status == S.CANCELLED
    assert (await h.outcome(promotion)).status == S.CANCELLED
    assert [a["user"] for a in h.read(promotion).approvals] == [lead.name]
    return await h.handle(promotion).fetch_history()


SCENARIOS: dict[str, Callable[[Harness], Awaitable[WorkflowHistory]]] = {
    "check_error": check_error,
    "decisions_recorded": decisions_recorded,
    "group_quorum": group_quorum,
    "evidence_changed": evidence_changed,
    "happy_path": happy_path,
    "expiry": expiry,
    "checks_failed_then_recheck": checks_failed_then_recheck,
}


def stored_histories() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_fresh_history_replays(harness: Harness, scenario: str) -> None:
    """Run the scenario now; its history replays (and is stored with RECORD_HISTORIES=1)."""
    history = await SCENARIOS[scenario](harness)

    await replayer().replay_workflow(history)

    if RECORD:
        HISTORIES.mkdir(exist_ok=True)
        (HISTORIES / f"{scenario}.json").write_text(history.to_json())


@pytest.mark.parametrize("path", stored_histories(), ids=lambda path: path.stem)
async def test_stored_history_replays(path: Path) -> None:
    # The workflow id is not part of a history's JSON and does not affect replay.
    history = WorkflowHistory.from_json(f"replay-{path.stem}", path.read_text())
    assert history.events, f"{path.name} holds no events"

    await replayer().replay_workflow(history)


def test_every_scenario_has_a_stored_history() -> None:
    assert {path.stem for path in stored_histories()} >= set(SCENARIOS), (
        "record the missing histories with RECORD_HISTORIES=1")
