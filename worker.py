"""The Temporal worker: runs PromotionWorkflow and its activities against the configured registry."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities import Notifier, PromotionActivities, TestRunner
from calabi.bootstrap import Services, build_services, temporal_connector
from calabi.engine import PromotionService
from calabi.reconciler import PromotionReconciler
from calabi.settings import Settings
from workflows.promotion import PromotionWorkflow

__all__ = ["ACTIVITY_THREADS", "build_activities", "build_reconciler", "main", "run_worker"]

ACTIVITY_THREADS = 16
log = logging.getLogger("calabi.worker")


def build_activities(services: Services) -> list[Callable[..., Any]]:
    """The bound activity methods a worker registers, wired to ``services`` and its settings."""
    settings = services.settings
    notifier = Notifier(
        services.registry,
        webhook_urls=settings.webhook_urls,
        secret=settings.webhook_secret.get_secret_value() if settings.webhook_secret else None,
        recipients=settings.notify_recipients,
    )
    promotion = PromotionActivities(services.registry, services.artifacts, settings.resolved_policy_dir(), notifier)
    return [
        promotion.snapshot_evidence,
        promotion.evaluate_check,
        promotion.verify_evidence,
        promotion.record_state,
        promotion.record_sign_off,
        promotion.apply_promotion,
        promotion.notify,
        TestRunner(services.artifacts).run_tests,
    ]


def build_reconciler(services: Services, client: Client) -> PromotionReconciler:
    """The reconciler of live promotions, on the worker's client and settings."""
    settings = services.settings

    async def connected() -> Client:
        return client

    promotions = PromotionService(services.registry, connected, task_queue=settings.temporal_task_queue)
    return PromotionReconciler(services.registry, promotions, grace=timedelta(seconds=settings.reconcile_grace_s))


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Poll the task queue and reconcile live promotions (at start-up, then periodically) until ``stop`` is set."""
    services = build_services(settings)
    client = await temporal_connector(settings)()
    stop = stop or asyncio.Event()
    try:
        with ThreadPoolExecutor(max_workers=ACTIVITY_THREADS, thread_name_prefix="calabi-activity") as pool:
            worker = Worker(
                client,
                task_queue=settings.temporal_task_queue,
                workflows=[PromotionWorkflow],
                activities=build_activities(services),
                activity_executor=pool,
                graceful_shutdown_timeout=timedelta(seconds=10),
            )
            async with worker:
                log.info("worker polling %s on %s", settings.temporal_task_queue, settings.resolved_temporal_address())
                reconciling = asyncio.create_task(build_reconciler(services, client).run(
                    stop, every=timedelta(seconds=settings.reconcile_every_s)))
                await stop.wait()
                await reconciling
    finally:
        services.close()
        gc.collect()  # let Temporal's bridge objects die while the loop is alive (sdk-python#300)
        await asyncio.sleep(0.1)


def main() -> None:
    """Entry point for ``python worker.py``: settings from the environment."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(run_worker(Settings()))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
