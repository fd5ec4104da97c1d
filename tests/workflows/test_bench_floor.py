"""The engine benchmark's floor (``bench/floor_workflow.py``) runs what a passing promotion runs.

A real promotion is taken through sign-off to Production on the harness; its history must be
read as the benchmark reads it (statuses written, activities in parallel batches), the floor
must replay exactly that shape, and the floor's fallback count must be what the workflow runs.
No timing here: the numbers belong to ``python -m bench``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from uuid import uuid4

from temporalio.worker import Worker

from bench.engine_history import fetch_timeline
from bench.engine_report import BEGIN, END, old_section, splice
from bench.floor_workflow import FLOOR_ACTIVITIES, FloorStep, FloorWorkflow, default_shape, shape_of
from bench.report import KEEP_MARKER
from policies.status import PromotionStatus as S
from tests.workflows.conftest import Harness


def _steps(part: list[list[FloorStep]]) -> list[list[tuple[str, str]]]:
    """A shape's activities and statuses, without the check names (the fallback numbers its checks)."""
    return [[(step.activity, step.status) for step in batch] for batch in part]


async def test_floor_replays_a_passing_promotion_and_both_histories_read_alike(harness: Harness) -> None:
    h = harness
    model = h.register()
    promotion = await h.request(model=model)
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    await h.decide(h.approver, promotion, "sign_off", "ok")
    assert (await h.outcome(promotion)).status == S.PROMOTED

    real = await fetch_timeline(h.client, promotion.workflow_id)
    assert {"running_checks", "awaiting_sign_off", "applying", "promoted"} <= real.recorded.keys()
    assert real.recorded["awaiting_sign_off"] < real.recorded["promoted"]
    shape = shape_of(*real.shape())
    checks = [step.check for batch in shape.before for step in batch if step.activity == "evaluate_check"]
    assert sorted(checks) == ["description", "leakage", "metrics", "signature", "tests"]
    fallback = default_shape(len(checks))

    assert (_steps(shape.before), _steps(shape.after)) == (_steps(fallback.before), _steps(fallback.after)), (
        "bench/floor_workflow.py default_shape no longer counts what PromotionWorkflow runs: update it")

    queue, workflow_id = f"floor-{uuid4().hex[:8]}", f"floor-{uuid4().hex[:8]}"
    with ThreadPoolExecutor(max_workers=4) as pool:
        async with Worker(h.client, task_queue=queue, workflows=[FloorWorkflow], activities=FLOOR_ACTIVITIES,
                          activity_executor=pool):
            handle = await h.client.start_workflow(FloorWorkflow.run, shape, id=workflow_id, task_queue=queue)
            assert await handle.execute_update(FloorWorkflow.awaiting) is True
            await handle.execute_update(FloorWorkflow.sign_off)
            assert await handle.result() == "promoted"
    floor = await fetch_timeline(h.client, workflow_id)
    assert shape_of(*floor.shape()) == shape
    assert floor.recorded.keys() == real.recorded.keys()
    assert all(run.outcome == "completed" for run in floor.activities)


def test_each_part_of_the_bench_rewrites_only_its_own_section(tmp_path: Path) -> None:
    registry = "# Registry\n\nrows\n"
    section = f"{BEGIN}\n## Engine\n\nfirst\n{END}\n"
    page = splice(registry + KEEP_MARKER + "\n\nnotes\n", section)
    assert page.index("rows") < page.index("## Engine") < page.index(KEEP_MARKER) < page.index("notes")
    again = splice(page, section.replace("first", "second"))
    assert "second" in again and "first" not in again and again.count(BEGIN) == 1
    assert again.replace("second", "first") == page
    assert splice(registry, section).endswith(section)
    assert splice(registry, None) == registry

    path = tmp_path / "RESULTS.md"
    assert old_section(path) is None
    path.write_text(page)
    assert old_section(path) == section  # what a registry-only run carries over
