"""PromotionService: the client side of the engine. Opens requests, starts workflows and delivers decisions.

The API and the CLI call it; every rule it relies on lives in RegistryService (which versions
are eligible; who may decide, by ``policies.decisions``, on the read model) and is checked again
by the workflow. Reads never reach Temporal (the read model is current); every Temporal call is
bounded by ``rpc_timeout`` and an unreachable Temporal is an ``UnavailableError`` (503).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from temporalio.client import Client, RPCTimeoutOrCancelledError, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from registry_store.audit import Actor
from registry_store.entities import PostImplementationReview, Promotion
from registry_store.errors import AlreadyExistsError, RegistryError, UnavailableError, refused
from registry_store.service import RegistryService
from registry_store.users import ROLES
from workflows.model_evidence import ModelEvidenceWorkflow, evidence_workflow_id
from workflows.models import (
    Decision,
    ModelEvidenceInput,
    PromotionInput,
    PromotionState,
    ReviewInput,
    review_workflow_id,
)
from workflows.promotion import PromotionWorkflow
from workflows.review import PostImplementationReviewWorkflow

__all__ = ["MEMO_PROMOTION_ID", "RPC_TIMEOUT", "PromotionService", "WorkflowRun"]

RPC_TIMEOUT = timedelta(seconds=5)
"""Bound on each Temporal call from the API: an unreachable or hung Temporal answers 503 within it."""
MEMO_PROMOTION_ID = "promotion_id"
"""Memo key naming the promotion a run belongs to (a workflow id is reused by later promotions of the version)."""
CLOCK_SKEW_MS = 2000
"""Tolerance between the registry's clock and Temporal's when telling a run's start from a row's creation."""
T = TypeVar("T")

_STARTER = Actor(name="calabi-api", roles=frozenset(ROLES))
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkflowRun:
    """The latest run of a promotion's workflow id: its status, and whether it runs that promotion."""

    status: WorkflowExecutionStatus | None
    ours: bool
    promotion_id: str | None = None
    """The promotion the run's memo names (None for runs started before the memo existed)."""

    @property
    def running(self) -> bool:
        """Whether the run is still going."""
        return self.status == WorkflowExecutionStatus.RUNNING


class PromotionService:
    """Submit promotions and deliver human decisions to their workflows."""

    def __init__(
        self,
        registry: RegistryService,
        connect: Callable[[], Awaitable[Client]],
        *,
        task_queue: str,
        rpc_timeout: timedelta = RPC_TIMEOUT,
    ) -> None:
        self._registry = registry
        self._connect = connect
        self._task_queue = task_queue
        self._rpc_timeout = rpc_timeout
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        """The Temporal client, connected on first use."""
        async with self._lock:
            if self._client is None:
                self._client = await self._bounded(self._connect(), "connect to Temporal")
            return self._client

    async def request(
        self,
        actor: Actor,
        *,
        model: object,
        version: object,
        target_stage: object,
        justification: object,
        kind: str = "promotion",
    ) -> Promotion:
        """Record the request and start its workflow (id ``promotion-<model>-<version>-<target>``).

        If the start fails the row is closed at once; if this process dies between the two, the
        reconciler (``calabi.reconciler``) starts the workflow.
        """
        client = await self.client()
        promotion = await asyncio.to_thread(
            self._registry.promotions.open_promotion, actor, model=model, version=version, target_stage=target_stage,
            justification=justification, kind=kind,
        )
        try:
            await self.start(promotion, client=client)
        except WorkflowAlreadyStartedError as exc:
            run = await self.workflow_run(promotion)
            if run is not None and run.ours:  # a reconciler started it first (this request stalled past the grace)
                return promotion
            if run is None or not await self._replace_stray_run(promotion, run):
                await self._abandon(promotion, "another promotion workflow with this id is still running")
                raise AlreadyExistsError(f"A promotion workflow {promotion.workflow_id} is already running.") from exc
        except UnavailableError as exc:
            await self._abandon(promotion, f"could not start the workflow: {exc.message}")
            raise
        return promotion

    async def start(self, promotion: Promotion, *, client: Client | None = None, use_existing: bool = False) -> None:
        """Start the workflow of ``promotion`` (``use_existing``: a running run of its id is accepted as is)."""
        start = PromotionInput(
            promotion_id=promotion.id, model=promotion.model_name, version=promotion.version,
            target_stage=promotion.target_stage, kind=promotion.kind, requester=promotion.requester,
        )
        client = client or await self.client()
        await self._bounded(client.start_workflow(
            PromotionWorkflow.run, start, id=promotion.workflow_id, task_queue=self._task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING if use_existing else WorkflowIDConflictPolicy.FAIL,
            memo={MEMO_PROMOTION_ID: promotion.id}, rpc_timeout=self._rpc_timeout,
        ), "start the promotion workflow")

    async def rollback(self, actor: Actor, *, model: object, justification: object) -> Promotion:
        """Re-promote the previous Production version under the rollback policy."""
        version = await asyncio.to_thread(self._registry.production.previous_production_version, actor, model)
        return await self.request(
            actor, model=model, version=version, target_stage="Production", justification=justification,
            kind="rollback",
        )

    async def decide(self, actor: Actor, promotion_id: str, action: str, comment: str = "") -> PromotionState:
        """Deliver a sign-off, rejection, cancellation or re-check request; the workflow validates it again.

        Authorized on the read model alone (its status, approvals and the snapshot's sign-off rule):
        the status a caller reads is the status a decision is judged by.
        """
        promotion = await asyncio.to_thread(
            self._registry.promotions.authorize_decision, actor, promotion_id, action, comment=comment)
        handle = (await self.client()).get_workflow_handle(promotion.workflow_id)
        decision = Decision(user=actor.name, roles=sorted(actor.roles), groups=sorted(actor.groups), comment=comment)
        try:
            return await self._bounded(handle.execute_update(
                action, decision, result_type=PromotionState, rpc_timeout=self._rpc_timeout,
            ), f"deliver the {action.replace('_', '-')} to the promotion workflow")
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError):
                code, message = cause.type, cause.message
            else:
                code, message = None, str(cause or exc)
            raise refused(code, f"The promotion refused the {action.replace('_', '-')}: {message}") from exc

    async def evidence_may_have_changed(self, model: str, version: int | str | None = None) -> None:
        """Signal the live promotions of ``model`` (``version``) to re-verify their evidence now.

        Called after the registry committed a write that can change a candidate's evidence, so
        approvers never look at a stale all-green checklist for long. Best effort: if Temporal is
        unreachable, or the process dies between the commit and this signal (kill -9), the
        workflow's own re-verification at the next sign-off, reminder and apply still converges,
        so this never fails the caller's request.
        """
        try:
            live = await asyncio.to_thread(self._registry.promotions.live_promotions, _STARTER, model, version)
            if not live:
                return
            client = await self.client()
        except RegistryError as exc:
            log.warning("could not tell the promotions of %s that its evidence may have changed: %s", model, exc)
            return
        for promotion in live:
            try:
                handle = client.get_workflow_handle(promotion.workflow_id)
                await self._bounded(handle.signal(PromotionWorkflow.evidence_may_have_changed,
                                                  rpc_timeout=self._rpc_timeout), "signal the promotion")
            except UnavailableError as exc:  # e.g. the run ended meanwhile
                log.warning("could not signal promotion %s: %s", promotion.id, exc.message)

    async def start_model_evidence(self, model: str, version: int | str) -> None:
        """Start computing a just-registered version's model evidence in the background (once per artifact digest).

        Called after the registration committed, so a promotion usually finds the evidence ready. Best
        effort: with Temporal unreachable (or a kill -9 before this runs) nothing fails; the promotion
        computes the evidence when it needs it. A digest whose computation ran already is not started again.
        """
        try:
            registered = await asyncio.to_thread(self._registry.versions.get_model_version, _STARTER, name=model,
                                                 version=version)
            if registered.evidence.get("feature_importances"):
                return  # recorded with the artifact: nothing to load
            client = await self.client()
            await self._bounded(client.start_workflow(
                ModelEvidenceWorkflow.run, ModelEvidenceInput(model=registered.name, version=registered.version),
                id=evidence_workflow_id(registered.digest), task_queue=self._task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY, rpc_timeout=self._rpc_timeout,
            ), "start computing the model evidence")
        except WorkflowAlreadyStartedError:
            return  # computed (or being computed) for this digest already
        except RegistryError as exc:
            log.warning("could not start computing the model evidence of %s v%s: %s", model, version, exc)

    async def start_review(self, review: PostImplementationReview) -> bool:
        """Start the workflow that reminds and escalates ``review`` (id ``review-<id>``); a running one is kept.

        True: it runs now; False: a run of the id ended already (it escalated or saw the review completed). Raises
        ``UnavailableError`` when Temporal cannot be reached.
        """
        left_ms = max(review.due_at - self._registry.context.clock(), 0)
        start = ReviewInput(review_id=review.id, model=review.model_name, version=review.version,
                            time_left=timedelta(milliseconds=left_ms),
                            reminder_every=timedelta(seconds=review.reminder_every_s))
        client = await self.client()
        try:
            await self._bounded(client.start_workflow(
                PostImplementationReviewWorkflow.run, start, id=review_workflow_id(review.id),
                task_queue=self._task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY, rpc_timeout=self._rpc_timeout,
            ), "start the review workflow")
        except WorkflowAlreadyStartedError:
            return False
        return True

    async def start_reviews(self, model: str) -> None:
        """Start the workflows of the model's open reviews, after a break-glass move committed (best effort:
        the reconciler starts what this misses)."""
        try:
            for review in await asyncio.to_thread(self._registry.reviews.unescalated_reviews, _STARTER, model=model):
                await self.start_review(review)
        except RegistryError as exc:
            log.warning("could not start the review workflows of %s: %s", model, exc)

    async def review_completed(self, review_id: int) -> None:
        """Tell a completed review's workflow to end (best effort: its next reminder finds it completed)."""
        try:
            client = await self.client()
            handle = client.get_workflow_handle(review_workflow_id(review_id))
            signal = handle.signal(PostImplementationReviewWorkflow.completed, rpc_timeout=self._rpc_timeout)
            await self._bounded(signal, "signal the review workflow")
        except RegistryError as exc:  # no run (it ended), or Temporal unreachable
            log.warning("could not signal the workflow of review %s: %s", review_id, exc)

    async def workflow_run(self, promotion: Promotion) -> WorkflowRun | None:
        """The latest run of the promotion's workflow id: its status and whether it runs this promotion (None: none).

        A run is this promotion's by its memo or, for runs started before the memo was set, by
        having started after the promotion was opened (a workflow id is reused by later promotions).
        """
        handle = (await self.client()).get_workflow_handle(promotion.workflow_id)
        try:
            description = await self._bounded(handle.describe(rpc_timeout=self._rpc_timeout), "describe the workflow")
        except UnavailableError as exc:
            cause = exc.__cause__
            if isinstance(cause, RPCError) and cause.status == RPCStatusCode.NOT_FOUND:
                return None
            raise
        memo = await description.memo()
        owner = memo.get(MEMO_PROMOTION_ID)
        if isinstance(owner, str):
            ours = owner == promotion.id
        else:
            owner = None
            ours = description.start_time.timestamp() * 1000 >= promotion.creation_timestamp - CLOCK_SKEW_MS
        return WorkflowRun(status=description.status, ours=ours, promotion_id=owner)

    async def _replace_stray_run(self, promotion: Promotion, run: WorkflowRun) -> bool:
        """Terminate a run whose promotion row is already closed and start ``promotion``'s own (True: started).

        Such a run is a start that Temporal accepted after the API had given up on it (the call
        outlived its bound while Temporal was down) and closed its row; left alone it would
        block every request for the version until its first record found the row closed.
        """
        if run.promotion_id is None:
            return False
        try:
            other = await asyncio.to_thread(self._registry.promotions.get_promotion, _STARTER, run.promotion_id)
        except RegistryError:
            return False
        if other.live:
            return False
        handle = (await self.client()).get_workflow_handle(promotion.workflow_id)
        try:
            await self._bounded(handle.terminate(reason=f"promotion {other.id} was closed as {other.status}",
                                                 rpc_timeout=self._rpc_timeout), "terminate a stray workflow")
        except UnavailableError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, RPCError) and cause.status == RPCStatusCode.NOT_FOUND):  # not ended meanwhile
                raise
        log.warning("terminated the workflow of closed promotion %s to start promotion %s", other.id, promotion.id)
        await self.start(promotion)
        return True

    async def _bounded(self, call: Awaitable[T], what: str) -> T:
        """Await a Temporal call for at most the rpc timeout; failing to reach Temporal is an UnavailableError."""
        seconds = self._rpc_timeout.total_seconds()
        try:
            return await asyncio.wait_for(call, seconds)
        except TimeoutError as exc:
            raise UnavailableError(f"Temporal did not answer within {seconds:g} s (could not {what}).") from exc
        except RPCTimeoutOrCancelledError as exc:
            raise UnavailableError(f"Temporal did not answer within {seconds:g} s (could not {what}).") from exc
        except (RPCError, RuntimeError, OSError) as exc:
            raise UnavailableError(f"Temporal is not reachable (could not {what}): {exc}") from exc

    async def _abandon(self, promotion: Promotion, message: str) -> None:
        await asyncio.to_thread(self._registry.promotions.close_promotion, _STARTER, promotion.id, reason=message)
