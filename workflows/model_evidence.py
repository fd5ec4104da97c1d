"""ModelEvidenceWorkflow: compute a new version's model evidence in the background, once per artifact digest.

Started (best effort) after a registration commits, with id ``model-evidence-<digest>``, so the
evidence is usually stored before anyone requests a promotion; a promotion that finds none
computes it itself. The one activity runs on the heavy queue (bounded slots) and is retried
on infrastructure errors; a model that cannot be loaded fails the run, leaving nothing stored.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.models import ModelEvidenceInput, heavy_task_queue

__all__ = ["EVIDENCE_HEARTBEAT_TIMEOUT", "EVIDENCE_RETRY", "EVIDENCE_TIMEOUT", "ModelEvidenceWorkflow",
           "evidence_workflow_id"]

EVIDENCE_TIMEOUT = timedelta(minutes=5)
"""One attempt: waiting for a warm loader, downloading, loading (the loader's own budget is 30 s)."""
EVIDENCE_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
EVIDENCE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_interval=timedelta(seconds=30), maximum_attempts=5,
    non_retryable_error_types=["MODEL_UNLOADABLE", "RESOURCE_DOES_NOT_EXIST", "DATA_LOSS", "PERMISSION_DENIED"],
)


def evidence_workflow_id(digest: str) -> str:
    """The id of the background computation for one artifact digest."""
    return f"model-evidence-{digest}"


@workflow.defn
class ModelEvidenceWorkflow:
    """Run ``compute_model_evidence`` for one version on the heavy queue."""

    @workflow.run
    async def run(self, request: ModelEvidenceInput) -> str:
        """The importance source stored (``recorded``, ``model`` or ``none``)."""
        source: str = await workflow.execute_activity(
            "compute_model_evidence", request, result_type=str,
            task_queue=heavy_task_queue(workflow.info().task_queue), start_to_close_timeout=EVIDENCE_TIMEOUT,
            heartbeat_timeout=EVIDENCE_HEARTBEAT_TIMEOUT, retry_policy=EVIDENCE_RETRY,
        )
        return source
