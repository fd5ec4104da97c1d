"""What a workflow's Temporal history says: when each status was recorded, and how long each activity took.

Read the same way for Calabi's ``PromotionWorkflow`` and the floor's ``FloorWorkflow``, so both are
timed by one method on the Temporal server's clock: a status counts as reached when the first
activity that writes it into the read model completed: ``record_state`` with that status, and
for ``promoted`` also ``apply_promotion`` (its transaction moves the row to ``promoted``).
Activities are labelled by type, ``evaluate_check`` by its check's name, so the table keeps
working when the engine adds or moves activities (another task queue, new steps).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

__all__ = ["ActivityRun", "WorkflowTimeline", "fetch_timeline"]

_CLOSED = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: ("completed", "activity_task_completed_event_attributes"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: ("failed", "activity_task_failed_event_attributes"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: ("timed out", "activity_task_timed_out_event_attributes"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: ("cancelled", "activity_task_canceled_event_attributes"),
}

_ENDED = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED: "completed",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED: "failed",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT: "timed out",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED: "terminated",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED: "cancelled",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW: "continued as new",
}
_FAILED = {"failed", "timed out"}
_MESSAGE = 100
"""Characters kept of each failure message (a sandbox's timeout carries its whole command line)."""


@dataclass(frozen=True)
class ActivityRun:
    """One activity of a workflow, scheduled to closed (all attempts), on the server's clock (epoch seconds).

    ``batch`` is the workflow task that scheduled it: activities of one batch ran in parallel.
    """

    label: str
    scheduled: float
    started: float
    closed: float
    outcome: str
    attempts: int
    status: str | None = None
    batch: int = 0
    after_sign_off: bool = False
    failure: str = ""
    """Why the last attempt failed (failed or timed out), with its causes."""
    event_id: int = 0
    """Its ``ActivityTaskScheduled`` event: the order the workflow issued it in."""

    @property
    def total_ms(self) -> float:
        """Scheduled → closed: queueing, every attempt and the retries' backoff."""
        return (self.closed - self.scheduled) * 1000

    @property
    def run_ms(self) -> float:
        """The last attempt's start → closed."""
        return (self.closed - self.started) * 1000


@dataclass
class WorkflowTimeline:
    """The activities of one workflow run and the first time each recorded status was written."""

    workflow_id: str
    started: float = 0.0
    activities: list[ActivityRun] = field(default_factory=list)
    recorded: dict[str, float] = field(default_factory=dict)
    ended: str = ""
    """How the run ended, if it did: ``completed``, or ``failed: <why>`` (or another end)."""

    def shape(self) -> tuple[list[list[tuple[str, str | None]]], list[list[tuple[str, str | None]]]]:
        """The activities as ``(label, status)`` batches in schedule order, before and after the sign-off."""
        phases: tuple[dict[int, list[tuple[str, str | None]]], ...] = ({}, {})
        for run in sorted(self.activities, key=lambda a: a.event_id):
            phases[run.after_sign_off].setdefault(run.batch, []).append((run.label, run.status))
        return list(phases[0].values()), list(phases[1].values())


def _seconds(event: HistoryEvent) -> float:
    return float(event.event_time.ToMicroseconds()) / 1e6


def _decoded(payload: Payload) -> Any:
    """A JSON payload's value (both converters in use write ``json/plain``); None for any other encoding."""
    if payload.metadata.get("encoding") != b"json/plain":
        return None
    try:
        return json.loads(payload.data)
    except ValueError:
        return None


def _label(activity_type: str, arguments: list[Any]) -> tuple[str, str | None]:
    """The row label of an activity and the status it writes into the read model, if any."""
    first = arguments[0] if arguments and isinstance(arguments[0], dict) else {}
    if activity_type == "record_state":
        state = first.get("state", first)
        status = state.get("status") if isinstance(state, dict) else None
        return activity_type, status if isinstance(status, str) else None
    if activity_type == "apply_promotion":  # its transaction writes the row's ``promoted``
        return activity_type, "promoted"
    if activity_type == "evaluate_check" and isinstance(first.get("name"), str):
        return f"evaluate_check: {first['name']}", None
    return activity_type, None


def _failure(attrs: Any) -> str:
    """The failure message of a failed activity or workflow and its causes, repeats dropped, each kept short."""
    failure = attrs.failure if attrs.HasField("failure") else None
    messages: list[str] = []
    while failure is not None and len(messages) < 3:
        message = failure.message if len(failure.message) <= _MESSAGE else failure.message[:_MESSAGE] + "…"
        if message and message not in messages:
            messages.append(message)
        failure = failure.cause if failure.HasField("cause") else None
    return ": ".join(messages)


async def fetch_timeline(client: Client, workflow_id: str) -> WorkflowTimeline:
    """The latest run's timeline of ``workflow_id``."""
    history = await client.get_workflow_handle(workflow_id).fetch_history(rpc_timeout=timedelta(seconds=30))
    timeline = WorkflowTimeline(workflow_id)
    scheduled: dict[int, tuple[str, str | None, float, int]] = {}
    started: dict[int, tuple[float, int]] = {}
    signed_off, after = False, set()
    for event in history.events:
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            timeline.started = _seconds(event)
        elif kind in _ENDED:
            timeline.ended = _ENDED[kind]
            if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
                timeline.ended += f": {_failure(event.workflow_execution_failed_event_attributes)}"
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            accepted = event.workflow_execution_update_accepted_event_attributes
            signed_off = signed_off or accepted.accepted_request.input.name == "sign_off"
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            label, status = _label(attrs.activity_type.name, [_decoded(p) for p in attrs.input.payloads])
            scheduled[event.event_id] = (label, status, _seconds(event), attrs.workflow_task_completed_event_id)
            if signed_off:
                after.add(event.event_id)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs_started = event.activity_task_started_event_attributes
            started[event.event_id] = (_seconds(event), attrs_started.attempt)
        elif kind in _CLOSED:
            outcome, name = _CLOSED[kind]
            attrs_closed = getattr(event, name)
            label, status, at, batch = scheduled[attrs_closed.scheduled_event_id]
            began, attempts = started.get(attrs_closed.started_event_id, (at, 0))
            closed = _seconds(event)
            timeline.activities.append(ActivityRun(label, at, began, closed, outcome, attempts, status, batch,
                                                   attrs_closed.scheduled_event_id in after,
                                                   _failure(attrs_closed) if outcome in _FAILED else "",
                                                   attrs_closed.scheduled_event_id))
            if outcome == "completed" and status is not None:
                timeline.recorded.setdefault(status, closed)
    return timeline
