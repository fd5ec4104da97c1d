"""The Temporal worker: runs PromotionWorkflow and its activities against the configured registry."""

from __future__ import annotations

import asyncio
import gc
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.worker import Worker

from activities import build_activities
from calabi.bootstrap import build_services, temporal_connector
from calabi.settings import Settings
from workflows.promotion import PromotionWorkflow

__all__ = ["ACTIVITY_THREADS", "main", "run_worker"]

ACTIVITY_THREADS = 16
log = logging.getLogger("calabi.worker")


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
