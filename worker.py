"""The Temporal worker: runs PromotionWorkflow and its activities against the configured registry."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.worker import Worker

from activities import Notifier, PromotionActivities, TestRunner
from calabi.bootstrap import Services, build_services, temporal_connector
from calabi.settings import Settings
from workflows.promotion import PromotionWorkflow

__all__ = ["ACTIVITY_THREADS", "build_activities", "main", "run_worker"]

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


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Poll the task queue until ``stop`` is set (or forever)."""
    services = build_services(settings)
    client = await temporal_connector(settings)()
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
                await (stop or asyncio.Event()).wait()
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
