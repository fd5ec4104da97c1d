"""No live promotion without a running workflow: the reconciler starts a missing run or closes the row.

The gap is made for real: a row opened through the registry and never started (a crash
between the commit and the start), and a workflow terminated by hand. Two reconcilers run
at once, as several workers would.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from temporalio.client import WorkflowExecutionStatus

from calabi.engine import MEMO_PROMOTION_ID
from calabi.reconciler import PromotionReconciler
from policies.status import PromotionStatus
from registry_store.errors import InvalidParameterError
from tests.workflows.conftest import Harness
from workflows.models import PromotionInput
from workflows.promotion import PromotionWorkflow

S = PromotionStatus


async def test_reconcilers_start_missing_workflows_and_close_rows_whose_workflow_ended(harness: Harness) -> None:
    h = harness
    orphan_model, ended_model = h.register(), h.register()
    orphan = h.registry.promotions.open_promotion(h.requester, model=orphan_model, version=2,
                                                  target_stage="Production", justification="crashed before start")
    ended = await h.request(model=ended_model)
    await h.wait_for(ended, S.AWAITING_SIGN_OFF)
    await h.handle(ended).terminate(reason="operator cleanup")
    h.started.append(orphan.workflow_id)
    reconcilers = [PromotionReconciler(h.registry, h.promotions, grace=timedelta(0)) for _ in range(2)]

    passes = await asyncio.gather(*(r.reconcile() for r in reconcilers))

    assert {p for done in passes for p in done.started} == {orphan.id}, passes  # both may ensure it runs
    assert [p for done in passes for p in done.closed] == [ended.id], passes  # closed once
    await h.wait_for(orphan, S.AWAITING_SIGN_OFF)
    await h.decide(h.approver, orphan, "sign_off")
    assert (await h.outcome(orphan)).status == S.PROMOTED
    assert [n.kind for n in h.notifications(orphan)] == ["requested", "awaiting", "promoted"]  # one run
    closed = h.read(ended)
    assert (closed.status, closed.live) == ("failed", False)
    assert closed.message == "its workflow ended (terminated) without finishing the promotion"
    closing = [e for e in h.audit(ended_model) if e.action == "promotion_state" and e.actor == "calabi-reconciler"]
    assert len(closing) == 1 and closing[0].after["status"] == "failed"
    with pytest.raises(InvalidParameterError, match="can no longer change"):  # not even by a late workflow
        h.registry.promotions.record_promotion_state(h.admin, ended.id, status=S.AWAITING_SIGN_OFF)

    again = await h.request(model=ended_model, justification="after the cleanup")
    await h.wait_for(again, S.AWAITING_SIGN_OFF)
    assert (await reconcilers[0].reconcile()).started == [] and (await reconcilers[1].reconcile()).closed == []

    # The id's latest run is an earlier promotion's (by its memo): the new row's run is started, not the row closed.
    await h.decide(h.requester, again, "cancel")
    assert (await h.outcome(again)).status == S.CANCELLED
    third = h.registry.promotions.open_promotion(h.requester, model=ended_model, version=2, target_stage="Production",
                                                 justification="crashed before start, again")
    assert (await reconcilers[0].reconcile()).started == [third.id]
    await h.wait_for(third, S.AWAITING_SIGN_OFF)


async def test_young_rows_are_left_to_their_request(harness: Harness) -> None:
    h = harness
    model = h.register()
    orphan = h.registry.promotions.open_promotion(h.requester, model=model, version=2, target_stage="Production",
                                                  justification="still being started")

    done = await PromotionReconciler(h.registry, h.promotions, grace=timedelta(minutes=1)).reconcile()

    assert (done.started, done.closed) == ([], [])
    assert h.read(orphan).live


async def test_a_request_replaces_the_stray_run_of_a_closed_promotion(harness: Harness) -> None:
    """A start that landed after the API gave up on it (and closed its row) does not block the version."""
    h = harness
    model = h.register()
    gave_up = h.registry.promotions.open_promotion(h.requester, model=model, version=2, target_stage="Production",
                                                   justification="Temporal did not answer in time")
    h.registry.promotions.close_promotion(h.admin, gave_up.id, reason="could not start the workflow")
    stray = await h.client.start_workflow(  # delayed: it stays running without a task, as a late start would
        PromotionWorkflow.run, PromotionInput(
            promotion_id=gave_up.id, model=model, version=2, target_stage="Production", requester=h.requester.name),
        id=gave_up.workflow_id, task_queue=h.task_queue, memo={MEMO_PROMOTION_ID: gave_up.id},
        start_delay=timedelta(days=365))

    again = await h.request(model=model, justification="Temporal is back")

    stray_run = h.client.get_workflow_handle(gave_up.workflow_id, run_id=stray.result_run_id)
    assert (await stray_run.describe()).status == WorkflowExecutionStatus.TERMINATED
    await h.wait_for(again, S.AWAITING_SIGN_OFF)
    assert (h.read(gave_up).status, h.read(gave_up).live) == ("failed", False)
