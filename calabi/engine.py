"""PromotionService: the client side of the engine. Opens requests, starts, updates and queries workflows.

The API and the CLI call it; every rule it relies on lives in RegistryService (which versions
are eligible; who may decide, by ``policies.decisions``) and is checked again by the workflow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError

from policies.status import PromotionStatus
from registry_store.audit import Actor
from registry_store.entities import Promotion
from registry_store.errors import AlreadyExistsError, RegistryError, UnavailableError, refused
from registry_store.service import RegistryService
from registry_store.users import ROLES
from workflows.models import Decision, PromotionInput, PromotionState
from workflows.promotion import PromotionWorkflow

__all__ = ["PromotionService"]

_STARTER = Actor(name="calabi-api", roles=frozenset(ROLES))
log = logging.getLogger(__name__)


class PromotionService:
    """Submit promotions and deliver human decisions to their workflows."""

    def __init__(
        self, registry: RegistryService, connect: Callable[[], Awaitable[Client]], *, task_queue: str
    ) -> None:
        self._registry = registry
        self._connect = connect
        self._task_queue = task_queue
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        """The Temporal client, connected on first use."""
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await self._connect()
                except (RuntimeError, RPCError, OSError) as exc:
                    raise UnavailableError(f"Temporal is not reachable: {exc}") from exc
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
        """Record the request and start its workflow (id ``promotion-<model>-<version>-<target>``)."""
        client = await self.client()
        promotion = await asyncio.to_thread(
            self._registry.promotions.open_promotion, actor, model=model, version=version, target_stage=target_stage,
            justification=justification, kind=kind,
        )
        start = PromotionInput(
            promotion_id=promotion.id, model=promotion.model_name, version=promotion.version,
            target_stage=promotion.target_stage, kind=promotion.kind, requester=promotion.requester,
        )
        try:
            await client.start_workflow(
                PromotionWorkflow.run, start, id=promotion.workflow_id, task_queue=self._task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            )
        except WorkflowAlreadyStartedError as exc:
            await self._abandon(promotion, "another promotion workflow with this id is still running")
            raise AlreadyExistsError(f"A promotion workflow {promotion.workflow_id} is already running.") from exc
        except RPCError as exc:
            await self._abandon(promotion, f"could not start the workflow: {exc}")
            raise UnavailableError(f"Temporal refused to start the promotion: {exc}") from exc
        return promotion

    async def rollback(self, actor: Actor, *, model: object, justification: object) -> Promotion:
        """Re-promote the previous Production version under the rollback policy."""
        version = await asyncio.to_thread(self._registry.production.previous_production_version, actor, model)
        return await self.request(
            actor, model=model, version=version, target_stage="Production", justification=justification,
            kind="rollback",
        )

    async def decide(self, actor: Actor, promotion_id: str, action: str, comment: str = "") -> PromotionState:
        """Deliver a sign-off, rejection, cancellation or re-check request; the workflow validates it again.

        The registry decides with the sign-off rule of the workflow's policy snapshot (queried first).
        """
        promotion = await asyncio.to_thread(self._registry.promotions.get_promotion, actor, promotion_id)
        handle = (await self.client()).get_workflow_handle(promotion.workflow_id)
        try:
            live: PromotionState | None = await handle.query(PromotionWorkflow.state) if promotion.live else None
        except RPCError as exc:
            raise UnavailableError(f"The promotion workflow is not reachable: {exc}") from exc
        await asyncio.to_thread(
            self._registry.promotions.authorize_decision, actor, promotion_id, action,
            sign_off=live.sign_off if live is not None else None, comment=comment,
        )
        decision = Decision(user=actor.name, roles=sorted(actor.roles), comment=comment)
        try:
            state: PromotionState = await handle.execute_update(action, decision, result_type=PromotionState)
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError):
                code, message = cause.type, cause.message
            else:
                code, message = None, str(cause or exc)
            raise refused(code, f"The promotion refused the {action.replace('_', '-')}: {message}") from exc
        except RPCError as exc:
            raise UnavailableError(f"The promotion workflow is not reachable: {exc}") from exc
        return state

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
                await handle.signal(PromotionWorkflow.evidence_may_have_changed)
            except RPCError as exc:  # e.g. the run ended meanwhile
                log.warning("could not signal promotion %s: %s", promotion.id, exc)

    async def live_state(self, actor: Actor, promotion_id: str) -> PromotionState | None:
        """The workflow's live state, or None when its run is over or unreachable (use the read model)."""
        promotion = await asyncio.to_thread(self._registry.promotions.get_promotion, actor, promotion_id)
        if not promotion.live:
            return None
        try:
            handle = (await self.client()).get_workflow_handle(promotion.workflow_id)
            state: PromotionState = await handle.query(PromotionWorkflow.state)
        except (RPCError, UnavailableError):
            return None
        return state if state.promotion_id == promotion.id else None

    async def _abandon(self, promotion: Promotion, message: str) -> None:
        await asyncio.to_thread(
            self._registry.promotions.record_promotion_state, _STARTER, promotion.id, status=PromotionStatus.FAILED,
            message=message,
        )
