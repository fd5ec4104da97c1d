"""The reconciler: a live promotion row (and an open review) always has a running workflow, whatever process died when.

``PromotionService.request`` commits the row, then starts the workflow; a crash or a hung
Temporal between the two, or a workflow terminated by hand, would leave a live row that
blocks every new request for the version. The worker runs ``reconcile`` at start-up and
every ``reconcile_every_s``: for each live row older than the grace period, a missing run
is started (``USE_EXISTING``: idempotent with any number of reconcilers and the request
itself) and a run that ended while the row is live closes the row as ``failed`` with the
run's end status (row lock and re-check in one transaction: closed once). An open post-implementation
review not yet escalated gets its workflow started the same way (``reconcile_reviews``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

from calabi.engine import PromotionService
from registry_store.audit import Actor
from registry_store.errors import RegistryError
from registry_store.service import RegistryService
from registry_store.users import ROLES

__all__ = ["RECONCILER", "PromotionReconciler", "Reconciled"]

RECONCILER = Actor(name="calabi-reconciler", roles=frozenset(ROLES))
log = logging.getLogger(__name__)


@dataclass
class Reconciled:
    """What one pass did: promotion ids whose workflow was started, and whose row was closed; review ids
    whose workflow was started or found running."""

    started: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    reviews_started: list[int] = field(default_factory=list)


class PromotionReconciler:
    """Finds live promotions without a running workflow; starts or closes them."""

    def __init__(self, registry: RegistryService, promotions: PromotionService, *, grace: timedelta) -> None:
        self._registry = registry
        self._promotions = promotions
        self._grace = grace

    async def reconcile(self) -> Reconciled:
        """One pass over the live rows older than the grace period (a failure is logged and left to the next pass)."""
        done = Reconciled()
        created_before = int((time.time() - self._grace.total_seconds()) * 1000)
        rows = await asyncio.to_thread(
            self._registry.promotions.live_promotions_created_before, RECONCILER, created_before)
        for promotion in rows:
            try:
                run = await self._promotions.workflow_run(promotion)
                if run is None or (not run.ours and not run.running):
                    await self._promotions.start(promotion, use_existing=True)
                    log.warning("promotion %s had no workflow; started %s", promotion.id, promotion.workflow_id)
                    done.started.append(promotion.id)
                elif run.ours and not run.running:
                    ended = run.status.name.lower() if run.status is not None else "unknown"
                    reason = f"its workflow ended ({ended}) without finishing the promotion"
                    if await asyncio.to_thread(self._registry.promotions.close_promotion, RECONCILER, promotion.id,
                                               reason=reason):
                        log.warning("promotion %s closed: %s", promotion.id, reason)
                        done.closed.append(promotion.id)
                # else: its workflow runs, or an earlier promotion's run still holds the id (next pass)
            except RegistryError as exc:  # Temporal or the database unavailable: the next pass retries
                log.warning("could not reconcile promotion %s: %s", promotion.id, exc.message)
        return done

    async def reconcile_reviews(self, done: Reconciled | None = None) -> Reconciled:
        """Start the workflow of every open, unescalated post-implementation review that has none running
        (``USE_EXISTING``: idempotent with the start after the break-glass move and other reconcilers)."""
        done = done or Reconciled()
        for review in await asyncio.to_thread(self._registry.reviews.unescalated_reviews, RECONCILER):
            try:
                if await self._promotions.start_review(review):
                    done.reviews_started.append(review.id)
            except RegistryError as exc:  # Temporal unavailable: the next pass retries
                log.warning("could not start the workflow of review %s: %s", review.id, exc.message)
        return done

    async def run(self, stop: asyncio.Event, *, every: timedelta) -> None:
        """Reconcile promotions and reviews now and then every ``every`` until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.reconcile_reviews(await self.reconcile())
            except Exception:  # a pass that fails must not end the loop: the next one retries
                log.exception("promotion reconciliation failed")
            try:
                await asyncio.wait_for(stop.wait(), every.total_seconds())
            except TimeoutError:
                pass
