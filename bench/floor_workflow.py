"""The engine benchmark's floor: a bare workflow issuing the activities a passing promotion issues, as no-ops.

``workflows/promotion.py`` with the default policy (attestation tests, one approver), a
promotion that passes runs, up to ``awaiting_sign_off``: record_state (running_checks),
notify (requested), snapshot_evidence, evaluate_check × the checks (in parallel),
record_state (awaiting_sign_off), notify (awaiting); then, after the sign-off update:
record_sign_off, verify_evidence, record_state (applying), apply_promotion, record_state
(promoted), notify (promoted). ``FloorWorkflow`` issues the same activity calls in the same
order and parallelism (plus ``run_tests`` when asked), takes the sign-off as an update as the
real workflow does, and names the status in each ``record_state`` so the benchmark reads both
workflows' histories the same way (``bench.engine_history``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow

__all__ = ["FLOOR_ACTIVITIES", "FloorInput", "FloorWorkflow"]

_TIMEOUT = timedelta(seconds=60)


@dataclass(frozen=True)
class FloorInput:
    """How many checks the floor runs, and whether a test command runs before them."""

    checks: int
    run_tests: bool = False


def _noop(name: str) -> Callable[[dict[str, str]], None]:
    """A synchronous activity named ``name`` that does nothing (run in the worker's thread pool, as Calabi's)."""

    @activity.defn(name=name)
    def noop(payload: dict[str, str]) -> None:
        del payload

    return noop


FLOOR_ACTIVITIES = [
    _noop(name)
    for name in (
        "record_state", "notify", "snapshot_evidence", "evaluate_check", "run_tests", "record_sign_off",
        "verify_evidence", "apply_promotion",
    )
]


@workflow.defn(name="BenchFloorWorkflow")
class FloorWorkflow:
    """No-op activities in a passing promotion's order; waits for one sign-off update between the phases."""

    def __init__(self) -> None:
        self._signed_off = False
        self._awaiting = False

    @workflow.run
    async def run(self, spec: FloorInput) -> str:
        """Checks, wait for the sign-off, apply."""
        await self._call("record_state", status="running_checks")
        await self._call("notify", kind="requested")
        await self._call("snapshot_evidence")
        await asyncio.gather(*(self._check(index, spec.run_tests) for index in range(spec.checks)))
        await self._call("record_state", status="awaiting_sign_off")
        self._awaiting = True
        await self._call("notify", kind="awaiting")
        await workflow.wait_condition(lambda: self._signed_off)
        await self._call("record_sign_off")
        await self._call("verify_evidence")
        await self._call("record_state", status="applying")
        await self._call("apply_promotion")
        await self._call("record_state", status="promoted")
        await self._call("notify", kind="promoted")
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

    async def _check(self, index: int, run_tests: bool) -> None:
        if index == 0 and run_tests:
            await self._call("run_tests")
        await self._call("evaluate_check", name=f"check-{index}")

    async def _call(self, activity: str, /, **payload: str) -> None:
        await workflow.execute_activity(activity, dict(payload), start_to_close_timeout=_TIMEOUT)
