"""A worker killed during an activity loses at most 15 s: every activity the workflow schedules says so.

Read from a real run's history (the test run, the checks, state records, sign-off, apply,
notify): each activity either must finish within 15 s (light: a few database writes or a pure
evaluation) or heartbeats with a heartbeat timeout of at most 15 s, so Temporal retries a lost
attempt on another worker within that. The evidence snapshot is the one exception: it may load
the model in the sandbox (its own 30 s budget) without heartbeating.
"""

from __future__ import annotations

from temporalio.api.enums.v1 import EventType

from policies.status import PromotionStatus
from tests.workflows.conftest import Harness
from tests.workflows.test_check_error import check_error_then_recheck

LOST_WORK_S = 15
SNAPSHOT_S = 60


async def test_every_activity_is_retried_within_15_s_of_a_lost_worker(harness: Harness) -> None:
    h = harness
    promotion = await check_error_then_recheck(h)
    await h.decide(h.approver, promotion, "sign_off")
    assert (await h.outcome(promotion)).status == PromotionStatus.PROMOTED

    bounds: dict[str, set[tuple[float, float]]] = {}
    for event in (await h.handle(promotion).fetch_history()).events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled = event.activity_task_scheduled_event_attributes
            bounds.setdefault(scheduled.activity_type.name, set()).add(
                (scheduled.start_to_close_timeout.ToTimedelta().total_seconds(),
                 scheduled.heartbeat_timeout.ToTimedelta().total_seconds()))

    assert {"run_tests", "evaluate_check", "record_state", "record_sign_off", "apply_promotion", "notify",
            "verify_evidence", "snapshot_evidence"} <= set(bounds), bounds
    for name, found in bounds.items():
        for start_to_close, heartbeat in found:
            if name == "snapshot_evidence":
                assert start_to_close <= SNAPSHOT_S, (name, start_to_close)
            else:
                assert start_to_close <= LOST_WORK_S or 0 < heartbeat <= LOST_WORK_S, (name, start_to_close, heartbeat)
