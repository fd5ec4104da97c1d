"""No live promotion without a running workflow: the reconciler starts a missing run or closes the row.

The gap is made for real: a row opened through the registry and never started (a crash
between the commit and the start), and a workflow terminated by hand. Two reconcilers run
at once, as several workers would.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from calabi.reconciler import PromotionReconciler
from policies.status import PromotionStatus
from registry_store.errors import InvalidParameterError
from tests.workflows.conftest import Harness

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
