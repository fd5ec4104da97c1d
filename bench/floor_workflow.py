"""The engine benchmark's floor: a bare workflow issuing the activities a passing promotion issues, as no-ops.

``FloorWorkflow`` runs batches of no-op activities one after another (the activities of one
batch in parallel), waits for a sign-off update, then runs the batches after it. Its shape is
read from the history of a real promotion that went all the way (``shape_of``), so the floor
follows the engine when activities are added or moved. ``default_shape`` is what
``workflows/promotion.py`` runs with the default policy (attestation tests, one approver) for a
passing promotion, used when no real promotion got through: up to ``awaiting_sign_off``
record_state (running_checks), notify (requested), compute_model_evidence (on the heavy queue
there; a cache hit once registration computed it), snapshot_evidence, evaluate_check × the
checks (in parallel), record_state (awaiting_sign_off), notify (awaiting); after the sign-off
record_sign_off, verify_evidence, record_state (applying), apply_promotion, record_state
(promoted), notify (promoted). Each ``record_state`` names its status, so the benchmark reads
both workflows' histories the same way (``bench.engine_history``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RawValue

__all__ = ["FLOOR_ACTIVITIES", "FloorInput", "FloorStep", "FloorWorkflow", "default_shape", "shape_of"]

_TIMEOUT = timedelta(seconds=60)
AWAITING = "awaiting_sign_off"


@dataclass(frozen=True)
class FloorStep:
    """One activity call: its name and, as its payload, the status it records or the check it evaluates."""

    activity: str
    status: str = ""
    check: str = ""


@dataclass(frozen=True)
class FloorInput:
    """Batches before the sign-off and after it; the steps of a batch run in parallel."""

    before: list[list[FloorStep]]
    after: list[list[FloorStep]]

    def count(self) -> int:
        """Activities in all."""
        return sum(len(batch) for batch in (*self.before, *self.after))

    def describe(self) -> str:
        """``a, b, 5 × c in parallel | d, e`` (before | after the sign-off)."""
        def batches(part: list[list[FloorStep]]) -> str:
            return ", ".join(
                batch[0].activity if len(batch) == 1 else f"{len(batch)} × {batch[0].activity} in parallel"
                if len({s.activity for s in batch}) == 1 else "(" + " ‖ ".join(s.activity for s in batch) + ")"
                for batch in part
            )

        return f"{batches(self.before)}; after the sign-off: {batches(self.after)}"


def default_shape(checks: int) -> FloorInput:
    """A passing promotion's activities under the default policy, as counted in ``workflows/promotion.py``."""
    def step(activity: str, status: str = "") -> list[FloorStep]:
        return [FloorStep(activity, status)]

    return FloorInput(
        before=[step("record_state", "running_checks"), step("notify"), step("compute_model_evidence"),
                step("snapshot_evidence"),
                [FloorStep("evaluate_check", check=f"check-{i}") for i in range(checks)],
                step("record_state", AWAITING), step("notify")],
        after=[step("record_sign_off"), step("verify_evidence"), step("record_state", "applying"),
               step("apply_promotion", "promoted"), step("record_state", "promoted"), step("notify")],
    )


def shape_of(before: Sequence[Sequence[tuple[str, str | None]]], after: Sequence[Sequence[tuple[str, str | None]]]
             ) -> FloorInput:
    """The floor's input from a promotion's ``(label, status)`` batches (``WorkflowTimeline.shape``)."""
    def steps(part: Sequence[Sequence[tuple[str, str | None]]]) -> list[list[FloorStep]]:
        return [[FloorStep(label.split(": ", 1)[0], status or "", label.partition(": ")[2]) for label, status in batch]
                for batch in part]

    return FloorInput(before=steps(before), after=steps(after))


@activity.defn(dynamic=True)
def any_activity(args: Sequence[RawValue]) -> None:
    """Every activity the floor calls, whatever its name: a no-op, run in the worker's thread pool as Calabi's are."""
    del args


FLOOR_ACTIVITIES = [any_activity]


@workflow.defn(name="BenchFloorWorkflow")
class FloorWorkflow:
    """No-op activities in a passing promotion's order; waits for one sign-off update between the phases."""

    def __init__(self) -> None:
        self._signed_off = False
        self._awaiting = False

    @workflow.run
    async def run(self, spec: FloorInput) -> str:
        """The batches before the sign-off, the wait for it, the batches after."""
        for batch in spec.before:
            await asyncio.gather(*(self._call(step) for step in batch))
            self._awaiting = self._awaiting or any(step.status == AWAITING for step in batch)
        self._awaiting = True
        await workflow.wait_condition(lambda: self._signed_off)
        for batch in spec.after:
            await asyncio.gather(*(self._call(step) for step in batch))
        return "promoted"

    @workflow.update
    async def awaiting(self) -> bool:
        """Returns once ``awaiting_sign_off`` is recorded: the driver's long-poll (no polling traffic)."""
        await workflow.wait_condition(lambda: self._awaiting)
        return True

    @workflow.update
    def sign_off(self) -> bool:
        """The approver's sign-off (an update, as in ``PromotionWorkflow``)."""
        self._signed_off = True
        return True

    async def _call(self, step: FloorStep) -> None:
        payload = {key: value for key, value in (("status", step.status), ("name", step.check)) if value}
        await workflow.execute_activity(step.activity, payload, start_to_close_timeout=_TIMEOUT)
