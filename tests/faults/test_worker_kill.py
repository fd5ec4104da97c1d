"""kill -9 of the worker while each kind of activity is in flight; a new worker finishes every promotion once.

One worker process holds one promotion per crash point (``tests/faults/gated_worker.py``): before an
activity's code runs, or after it ran to the end but before Temporal heard of it (the window where
a retry repeats a side effect). One more promotion's test command is really running in its sandbox.
The worker is killed once with SIGKILL, a plain ``python -m worker`` takes over, and every promotion
must reach Production exactly once: one stage move, one set of apply events, one audited sign-off,
one read-model event per status, one notification per kind; the audit chain verifies and no
promotion is left live. Run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionStatus

from policies.status import PromotionStatus
from registry_store.entities import Promotion
from tests.faults.gated_worker import Gate
from tests.faults.harness import (
    RESUME_S,
    Engine,
    held_test_policy,
    kill,
    processes_with,
    until,
)
from workflows.models import PromotionOutcome

pytestmark = pytest.mark.faults

CHECKS, SIGN_OFF = "checks", "sign-off"
# label: (activity, detail, point, phase in which the gate is reached)
CRASH_POINTS: dict[str, tuple[str, str, str, str]] = {
    "record-running-before": ("record_state", "running_checks", "before", CHECKS),
    "notify-requested-before": ("notify", "requested", "before", CHECKS),
    "snapshot-before": ("snapshot_evidence", "", "before", CHECKS),
    "snapshot-after": ("snapshot_evidence", "", "after", CHECKS),
    "evaluate-before": ("evaluate_check", "description", "before", CHECKS),
    "evaluate-after": ("evaluate_check", "tests", "after", CHECKS),
    "record-awaiting-after": ("record_state", "awaiting_sign_off", "after", CHECKS),
    "notify-awaiting-after": ("notify", "awaiting", "after", CHECKS),
    "sign-off-after": ("record_sign_off", "", "after", SIGN_OFF),
    "verify-before": ("verify_evidence", "", "before", SIGN_OFF),
    "apply-before": ("apply_promotion", "", "before", SIGN_OFF),
    "apply-after": ("apply_promotion", "", "after", SIGN_OFF),
    "record-promoted-after": ("record_state", "promoted", "after", SIGN_OFF),
    "notify-promoted-after": ("notify", "promoted", "after", SIGN_OFF),
}
TEST_RUN = "run-tests-running"


@pytest.fixture
def engines(tmp_path: Path, postgres_url: str) -> Iterator[list[Engine]]:
    started: list[Engine] = []
    try:
        started.append(Engine.create(tmp_path / "sqlite", f"sqlite:///{tmp_path / 'registry.db'}"))
        started.append(Engine.create(tmp_path / "postgres", postgres_url))
        yield started
    finally:
        for engine in started:
            engine.close()


@pytest.mark.postgres
async def test_worker_killed_during_each_activity(engines: list[Engine]) -> None:
    """SQLite and PostgreSQL side by side, so the test waits for Temporal's retry timeouts once."""
    results = await asyncio.gather(*(_crash_and_recover(engine) for engine in engines), return_exceptions=True)
    failed = [f"[{engine.kind}] {outcome}" for engine, outcome in zip(engines, results, strict=True) if outcome]
    if failed:
        pytest.fail("\n".join(failed), pytrace=False)


async def _crash_and_recover(engine: Engine) -> None:
    tag = secrets.token_hex(3)
    models = {label: f"{label}-{tag}" for label in [*CRASH_POINTS, TEST_RUN]}
    for model in models.values():
        engine.register(model)
    command_marker = f"held-test-{tag}"
    engine.override_policy(models[TEST_RUN], held_test_policy(command_marker))
    gates = [Gate(workflow_id=f"promotion-{models[label]}-2-Production", activity=activity, detail=detail, point=point)
             for label, (activity, detail, point, _) in CRASH_POINTS.items()]
    doomed = engine.start_worker("w1", gates)

    promotions = dict(zip(models, await asyncio.gather(*(engine.request(m) for m in models.values())), strict=True))
    signed: set[str] = set()

    async def sign_off_when_awaiting(label: str) -> None:
        await until(lambda: engine.has_status(promotions[label], PromotionStatus.AWAITING_SIGN_OFF),
                    f"{label} awaiting sign-off")
        await until(lambda: engine.signed_off(promotions[label]), f"{label} signed off")
        signed.add(label)

    await asyncio.gather(*(sign_off_when_awaiting(label) for label, point in CRASH_POINTS.items()
                           if point[3] == SIGN_OFF))
    await until(lambda: all((engine.markers / gate.marker).exists() for gate in gates)
                and engine.running_test_runs("w1") == 1, "every gate holding its activity, the test command running")
    assert processes_with(command_marker), "the held test command is not running"

    kill(doomed)
    killed_at = time.monotonic()
    orphans_gone = await until(lambda: not processes_with(command_marker), "the killed worker's test command dies",
                               timeout=30)
    engine.start_worker("w2")
    client = await engine.services.promotions.client()
    finished: dict[str, float] = {}

    async def progress() -> bool:
        engine.release_test_runs("w2")
        for label, promotion in promotions.items():
            if label in finished:
                continue
            if label not in signed and engine.has_status(promotion, PromotionStatus.AWAITING_SIGN_OFF) and (
                    await engine.signed_off(promotion)):
                signed.add(label)
            description = await client.get_workflow_handle(promotion.workflow_id).describe()
            if description.status != WorkflowExecutionStatus.RUNNING:
                finished[label] = time.monotonic() - killed_at
        return len(finished) == len(promotions)

    await until(progress, "every promotion finished after the kill", timeout=RESUME_S)
    print(f"\n[{engine.kind}] test command gone {orphans_gone:.1f} s after "
          f"the kill; kill -> finished (s): " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(finished.items())))

    outcomes = {label: await client.get_workflow_handle(p.workflow_id, result_type=PromotionOutcome).result()
                for label, p in promotions.items()}
    assert {k: o.status for k, o in outcomes.items() if o.status != PromotionStatus.PROMOTED} == {}, outcomes
    problems = engine.exactly_once_problems(promotions.values())
    assert problems == {}, f"not exactly once: {problems}"
    await _promote_again(engine, promotions[TEST_RUN])


async def _promote_again(engine: Engine, earlier: Promotion) -> None:
    """Nothing is stuck: the model's next version can be requested and reaches its sign-off."""
    engine.override_policy(earlier.model_name, "")
    again = await engine.request(earlier.model_name, version=engine.add_version(earlier.model_name, stage="Staging"))
    await until(lambda: engine.has_status(again, PromotionStatus.AWAITING_SIGN_OFF), "a new promotion of the model")
