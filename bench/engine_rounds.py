"""One round of the engine benchmark: N promotions (or N floor workflows) submitted at once, then signed off.

Both sides are timed from their Temporal histories (``bench.engine_history``): submit (the client's
clock just before the POST or the start call) → the ``record_state`` that wrote
``awaiting_sign_off`` completed, and sign-off sent → ``promoted`` written. Calabi's driver
learns the statuses by polling the read model (one ``GET /api/v1/promotions`` per interval, so
the polling cost does not grow with N); the floor's driver waits on an update (no polling).
Every wait is bounded by a deadline that grows with N.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from temporalio.client import Client

from bench.engine_history import ActivityRun, WorkflowTimeline, fetch_timeline
from bench.floor_workflow import FloorInput, FloorWorkflow
from bench.stats import percentile

__all__ = ["FLOOR_QUEUE", "CalabiDriver", "RoundResult", "Verdict", "floor_round"]

FLOOR_QUEUE = "bench-floor"
AWAITING, PROMOTED = "awaiting_sign_off", "promoted"
STOPPED = {"checks_failed", "check_error", "rejected", "expired", "cancelled", "failed", PROMOTED}
"""Statuses that end the wait for ``awaiting_sign_off`` (any other status is still on its way)."""


def checks_deadline_s(n: int) -> float:
    """How long N promotions may take to reach a verdict before the round gives up on them."""
    return 120.0 + 6.0 * n


def apply_deadline_s(n: int) -> float:
    """How long N signed-off promotions may take to be applied."""
    return 60.0 + 2.0 * n


@dataclass(frozen=True)
class Verdict:
    """A promotion that did not reach ``awaiting_sign_off`` with every check passing (or did not get applied)."""

    model: str
    status: str
    message: str


@dataclass
class RoundResult:
    """What one round measured on one side."""

    system: str
    n: int
    awaiting_ms: list[float] = field(default_factory=list)
    """Submit → ``awaiting_sign_off`` recorded, per workflow that got there (Temporal history)."""
    observed_ms: list[float] = field(default_factory=list)
    """Submit → the driver saw ``awaiting_sign_off`` (Calabi: read-model polling)."""
    signoff_ms: list[float] = field(default_factory=list)
    """Sign-off sent → ``promoted`` recorded."""
    phase_a_s: float = float("nan")
    phase_b_s: float = float("nan")
    cpu_s: float = float("nan")
    temporal_cpu_s: float = float("nan")
    not_passed: list[Verdict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    timelines: list[WorkflowTimeline] = field(default_factory=list)
    poll_ms: list[float] = field(default_factory=list)

    @property
    def activities(self) -> list[ActivityRun]:
        """Every activity of every workflow of the round."""
        return [a for t in self.timelines for a in t.activities]

    @property
    def promoted(self) -> int:
        """Workflows that went all the way to ``promoted``."""
        return len(self.signoff_ms)

    @property
    def rate(self) -> float:
        """Promotions (workflows) per second over both timed phases."""
        wall = self.phase_a_s + self.phase_b_s
        return self.promoted / wall if wall > 0 else float("nan")

    def p(self, values: list[float], q: float) -> float:
        """Nearest-rank percentile of ``values`` (NaN when empty)."""
        return percentile(sorted(values), q)


async def _finished(client: Client, workflow_ids: list[str]) -> None:
    """Wait (bounded) until the workflows have ended, so their histories hold every activity."""
    async def end(wid: str) -> None:
        await client.get_workflow_handle(wid).result()

    try:
        await asyncio.wait_for(asyncio.gather(*(end(w) for w in workflow_ids), return_exceptions=True), 60)
    except TimeoutError:
        pass  # a history without its last steps still has every timed step


def _times(result: RoundResult, timelines: Iterable[WorkflowTimeline], submitted: dict[str, float],
           signed: dict[str, float]) -> None:
    """Fill the history-derived numbers of ``result``."""
    reached, applied = [], []
    result.timelines = list(timelines)
    for timeline in result.timelines:
        wid = timeline.workflow_id
        if AWAITING in timeline.recorded:
            reached.append(timeline.recorded[AWAITING])
            result.awaiting_ms.append((timeline.recorded[AWAITING] - submitted[wid]) * 1000)
        if PROMOTED in timeline.recorded and wid in signed:
            applied.append(timeline.recorded[PROMOTED])
            result.signoff_ms.append((timeline.recorded[PROMOTED] - signed[wid]) * 1000)
    if reached:
        result.phase_a_s = max(reached) - min(submitted.values())
    if applied:
        result.phase_b_s = max(applied) - min(signed.values())


async def floor_round(client: Client, n: int, shape: FloorInput) -> RoundResult:
    """Start N floor workflows at once, wait until each awaits its sign-off, sign all off, wait for the ends."""
    result = RoundResult("floor", n)
    tag = uuid.uuid4().hex[:8]
    ids = [f"bench-floor-{n}-{tag}-{i}" for i in range(n)]
    submitted: dict[str, float] = {}
    signed: dict[str, float] = {}

    async def start(wid: str) -> None:
        submitted[wid] = time.time()
        handle = await client.start_workflow(FloorWorkflow.run, shape, id=wid, task_queue=FLOOR_QUEUE)
        await handle.execute_update(FloorWorkflow.awaiting)

    async def sign(wid: str) -> None:
        handle = client.get_workflow_handle(wid)
        signed[wid] = time.time()
        await handle.execute_update(FloorWorkflow.sign_off)
        await handle.result()

    for phase, deadline in ((start, checks_deadline_s(n)), (sign, apply_deadline_s(n))):
        try:
            outcomes = await asyncio.wait_for(asyncio.gather(*(phase(w) for w in ids), return_exceptions=True),
                                              deadline)
            result.errors += [f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)]
        except TimeoutError:
            result.errors.append(f"floor {phase.__name__} phase not done after {deadline:.0f}s")
    await _finished(client, ids)
    timelines = await asyncio.gather(*(fetch_timeline(client, w) for w in ids))
    _times(result, timelines, submitted, signed)
    return result


class CalabiDriver:
    """Submits, polls and signs off promotions through Calabi's HTTP API."""

    def __init__(self, client: Client, engineer: httpx.AsyncClient, approver: httpx.AsyncClient, poll_s: float):
        self._temporal = client
        self._engineer = engineer
        self._approver = approver
        self._poll_s = poll_s

    async def run(self, models: list[str]) -> RoundResult:
        """Promote ``models`` (each a version 1 in Staging) at once; see the module doc."""
        n = len(models)
        result = RoundResult("calabi", n)
        submitted: dict[str, float] = {}  # by workflow id
        signed: dict[str, float] = {}
        by_id: dict[str, tuple[str, str]] = {}  # promotion id -> (model, workflow id)

        async def submit(model: str) -> None:
            at = time.time()
            response = await self._engineer.post("/api/v1/promotions", json={
                "model": model, "version": 1, "target_stage": "Production", "justification": "bench: engine round",
            })
            if response.status_code != 201:
                result.errors.append(f"submit {model}: {response.status_code} {response.text[:300]}")
                return
            body = response.json()
            submitted[body["workflow_id"]] = at
            by_id[body["id"]] = (model, body["workflow_id"])

        await asyncio.gather(*(submit(m) for m in models))
        seen = await self._poll(result, set(by_id), lambda s: s == AWAITING or s in STOPPED, checks_deadline_s(n))
        ready: list[str] = []
        for pid, (model, wid) in by_id.items():
            status, message, row = seen.get(pid, ("(not listed)", "", {}))
            if status == AWAITING and _all_passed(row):
                ready.append(pid)
                result.observed_ms.append((row["_seen_at"] - submitted[wid]) * 1000)
            else:
                result.not_passed.append(Verdict(model, status, message or _failed_checks(row)))

        async def sign(pid: str) -> None:
            signed[by_id[pid][1]] = time.time()
            response = await self._approver.post(f"/api/v1/promotions/{pid}/sign-off", json={"comment": "bench"})
            if response.status_code != 200:
                result.errors.append(f"sign-off {by_id[pid][0]}: {response.status_code} {response.text[:300]}")

        await asyncio.gather(*(sign(pid) for pid in ready))
        done = await self._poll(result, set(ready), lambda s: s == PROMOTED or (s in STOPPED), apply_deadline_s(n))
        for pid in ready:
            status, message, _ = done.get(pid, ("(not listed)", "", {}))
            if status != PROMOTED:
                result.not_passed.append(Verdict(by_id[pid][0], f"{status} after sign-off", message))
        await _finished(self._temporal, [by_id[pid][1] for pid in ready])
        timelines = await asyncio.gather(*(fetch_timeline(self._temporal, wid) for _, wid in by_id.values()))
        _times(result, timelines, submitted, signed)
        failures = {t.workflow_id: _last_failure(t) for t in timelines}
        workflow_of = dict(by_id.values())
        result.not_passed = [
            v if v.message else Verdict(v.model, v.status, failures.get(workflow_of.get(v.model, ""), ""))
            for v in result.not_passed
        ]
        return result

    async def _poll(self, result: RoundResult, pending: set[str], settled: Callable[[str], bool], deadline_s: float
                    ) -> dict[str, tuple[str, str, dict[str, Any]]]:
        """Poll the read model until every promotion in ``pending`` is ``settled`` (bounded); the last rows seen."""
        seen: dict[str, tuple[str, str, dict[str, Any]]] = {}
        deadline = time.monotonic() + deadline_s
        waiting = set(pending)
        while waiting and time.monotonic() < deadline:
            asked = time.perf_counter()
            response = await self._approver.get("/api/v1/promotions", params={"max_results": 100})
            result.poll_ms.append((time.perf_counter() - asked) * 1000)
            now = time.time()
            if response.status_code == 200:
                for row in response.json()["promotions"]:
                    if row["id"] in waiting:
                        row["_seen_at"] = now
                        seen[row["id"]] = (row["status"], row.get("message", ""), row)
                        if settled(row["status"]):
                            waiting.discard(row["id"])
            else:
                result.errors.append(f"poll: {response.status_code} {response.text[:200]}")
            await asyncio.sleep(self._poll_s)  # the polling interval; the loop is bounded by the deadline
        for pid in waiting:
            status, message, row = seen.get(pid, ("(not listed)", "", {}))
            seen[pid] = (f"{status} (still, after {deadline_s:.0f}s)", message, row)
        return seen


def _last_failure(timeline: WorkflowTimeline) -> str:
    """What went wrong, from the history: the last failed activity and why, and the workflow's end if it ended."""
    failed = [a for a in timeline.activities if a.failure]
    said = [f"{failed[-1].label} failed: {failed[-1].failure}"] if failed else []
    if timeline.ended and timeline.ended != "completed":
        said.append(f"the workflow {timeline.ended} (its read-model row was left as it was)")
    return "; ".join(said)


def _results(row: dict[str, Any]) -> list[dict[str, Any]]:
    checklist = row.get("checklist") or {}
    return list(checklist.get("results", [])) if isinstance(checklist, dict) else []


def _all_passed(row: dict[str, Any]) -> bool:
    results = _results(row)
    return bool(results) and all(r.get("passed") for r in results)


def _failed_checks(row: dict[str, Any]) -> str:
    return "; ".join(f"{r['name']}: {', '.join(r.get('reasons', []))}" for r in _results(row) if not r.get("passed"))
