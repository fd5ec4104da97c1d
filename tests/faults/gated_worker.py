"""The real promotion worker (``worker.run_worker``) with gates: chosen activities stop at a chosen point.

Run as ``python -m tests.faults.gated_worker`` with the worker's usual ``CALABI_*`` settings and
``FAULT_GATES`` naming a JSON file ``{"markers": "<dir>", "gates": [{"workflow_id", "activity",
"detail", "point"}]}``. When an activity of ``workflow_id`` named ``activity`` (and, for
``record_state``/``notify``/``evaluate_check``, with that status, kind or check name as ``detail``)
reaches ``point``, the worker creates ``<markers>/<workflow_id>--<activity>--<point>`` and holds
that activity forever:

* ``before``: the activity's code has not run yet;
* ``after``: its code ran to the end (its transaction committed), but Temporal never hears of it.

The test then kills this process with SIGKILL: exactly the crash windows the engine must survive.
The hold waits on the event loop, so a held activity keeps no thread of the activity pool.
Nothing else about the worker changes: same activities, workflow, settings and task queue.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor, Worker

GATES_VARIABLE = "FAULT_GATES"


@dataclass(frozen=True)
class Gate:
    """Hold ``activity`` of ``workflow_id`` (``detail``: its status, kind or check name) at ``point``."""

    workflow_id: str
    activity: str
    point: str  # "before" | "after"
    detail: str = ""

    @property
    def marker(self) -> str:
        """The marker file's name once the gate holds an activity."""
        return f"{self.workflow_id}--{self.activity}--{self.point}"


def detail_of(activity_type: str, args: Any) -> str:
    """What tells apart the calls of one activity type within a workflow (empty: nothing needed)."""
    if not args:
        return ""
    first = args[0]
    if activity_type == "record_state":
        return str(first.state.status)
    if activity_type == "notify":
        return str(first.kind)
    if activity_type == "evaluate_check":
        return str(first.name)
    return ""


class _Hold(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, gates: list[Gate], markers: Path) -> None:
        super().__init__(next)
        self._gates = gates
        self._markers = markers

    def _gate(self, input: ExecuteActivityInput, point: str) -> Gate | None:
        info = activity.info()
        detail = detail_of(info.activity_type, input.args)
        for gate in self._gates:
            if (gate.workflow_id, gate.activity, gate.point) == (info.workflow_id, info.activity_type, point) and (
                    not gate.detail or gate.detail == detail):
                return gate
        return None

    async def _hold(self, gate: Gate) -> None:
        (self._markers / gate.marker).touch()
        await asyncio.Event().wait()  # until the test kills this process

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        before = self._gate(input, "before")
        if before is not None:
            await self._hold(before)
        result = await self.next.execute_activity(input)
        after = self._gate(input, "after")
        if after is not None:
            await self._hold(after)
        return result


class GateInterceptor(Interceptor):
    """Installs the holds of ``gates`` on every activity of the worker."""

    def __init__(self, gates: list[Gate], markers: Path) -> None:
        self._gates = gates
        self._markers = markers

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Hold(next, self._gates, self._markers)


def write_gates(path: Path, markers: Path, gates: list[Gate]) -> None:
    """Write the ``FAULT_GATES`` file."""
    path.write_text(json.dumps({"markers": str(markers), "gates": [g.__dict__ for g in gates]}))


def main() -> None:
    """Run ``worker.run_worker`` with the gates of ``$FAULT_GATES`` on its Temporal worker."""
    import worker
    from calabi.settings import Settings

    config = json.loads(Path(os.environ[GATES_VARIABLE]).read_text())
    interceptor = GateInterceptor([Gate(**g) for g in config["gates"]], Path(config["markers"]))

    def gated(*args: Any, interceptors: Sequence[Interceptor] = (), **kwargs: Any) -> Worker:
        return Worker(*args, interceptors=[*interceptors, interceptor], **kwargs)  # the worker's own come first

    worker.__dict__["Worker"] = gated  # run_worker builds its Temporal Worker through this name
    asyncio.run(worker.run_worker(Settings()))


if __name__ == "__main__":
    main()
