"""The Temporal worker: runs the workflows and their activities against the configured registry.

Two ``Worker``s share one process: the task queue itself (workflows and the light activities:
snapshot, checks, state records, sign-offs, apply, notify) and ``<task queue>-heavy`` for what
loads or runs a candidate's code (``compute_model_evidence``, ``run_tests``), at most
``heavy_activity_slots`` at a time, so a burst queues there instead of thrashing the machine and
the light steps are never stuck behind it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.worker import Worker

from activities import LoaderPool, ModelEvidenceActivities, Notifier, PromotionActivities, ReviewActivities, TestRunner
from activities.sandbox import SandboxUnavailableError
from calabi.activity_metrics import ActivityMetrics, serve_worker_metrics
from calabi.bootstrap import Services, build_services, temporal_connector
from calabi.engine import PromotionService
from calabi.logs import use_json_logs
from calabi.reconciler import PromotionReconciler
from calabi.settings import Settings
from calabi.tracing import start_tracing
from workflows.model_evidence import ModelEvidenceWorkflow
from workflows.models import heavy_task_queue
from workflows.promotion import PromotionWorkflow
from workflows.review import PostImplementationReviewWorkflow

__all__ = [
    "ACTIVITY_THREADS", "WORKFLOWS", "Activities", "activity_name", "build_activities", "build_reconciler", "main",
    "run_worker", "workers",
]

ACTIVITY_THREADS = 16
WORKFLOWS = [PromotionWorkflow, ModelEvidenceWorkflow, PostImplementationReviewWorkflow]
log = logging.getLogger("calabi.worker")


@dataclass(frozen=True)
class Activities:
    """A worker's activities: ``light`` for the task queue, ``heavy`` for its heavy queue, and the loader pool."""

    light: list[Callable[..., Any]]
    heavy: list[Callable[..., Any]]
    pool: LoaderPool


def build_activities(services: Services) -> Activities:
    """The bound activity methods a worker registers, wired to ``services`` and its settings.

    The loader pool is not started here (``run_worker`` starts it): until then a load starts its own loader.
    """
    settings = services.settings
    notifier = Notifier(services.registry, recipients=settings.notify_recipients)
    evidence = ModelEvidenceActivities(services.registry, services.artifacts, LoaderPool(settings.loader_pool_size))
    promotion = PromotionActivities(services.registry, services.artifacts, settings.resolved_policy_dir(), notifier,
                                    evidence, services.tracking)
    reviews = ReviewActivities(services.registry, notifier)
    return Activities(
        light=[
            promotion.snapshot_evidence,
            promotion.evaluate_check,
            promotion.verify_evidence,
            promotion.record_state,
            promotion.record_sign_off,
            promotion.apply_promotion,
            promotion.notify,
            reviews.remind_review,
            reviews.escalate_review,
        ],
        heavy=[evidence.compute_model_evidence, TestRunner(services.artifacts).run_tests],
        pool=evidence.pool,
    )


def workers(client: Client, activities: Activities, *, task_queue: str, heavy_slots: int,
            executor: ThreadPoolExecutor, **options: Any) -> tuple[Worker, Worker]:
    """The two workers of one process: workflows and light activities on ``task_queue``, heavy ones beside it.

    ``run_tests`` stays registered on ``task_queue`` too: promotions started before the heavy queue
    existed (workflow patch ``heavy-queue``) still schedule it there.
    """
    light = Worker(client, task_queue=task_queue, workflows=WORKFLOWS, activities=[*activities.light, *[
        fn for fn in activities.heavy if activity_name(fn) == "run_tests"]], activity_executor=executor, **options)
    heavy = Worker(client, task_queue=heavy_task_queue(task_queue), activities=activities.heavy,
                   activity_executor=executor, max_concurrent_activities=heavy_slots, **options)
    return light, heavy


def activity_name(fn: Callable[..., Any]) -> str:
    """The name an activity is registered under."""
    return activity._Definition.must_from_callable(fn).name or fn.__name__


def build_reconciler(services: Services, client: Client) -> PromotionReconciler:
    """The reconciler of live promotions, on the worker's client and settings."""
    settings = services.settings

    async def connected() -> Client:
        return client

    promotions = PromotionService(services.registry, connected, task_queue=settings.temporal_task_queue)
    return PromotionReconciler(services.registry, promotions, grace=timedelta(seconds=settings.reconcile_grace_s))


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Poll the task queue and its heavy queue, and reconcile live promotions (at start-up, then periodically),
    until ``stop`` is set; export metrics when ``worker_metrics_port`` is set and traces when tracing is on."""
    start_tracing("calabi-worker")
    with ExitStack() as exporting:
        runtime = None
        if settings.worker_metrics_port is not None:
            runtime, stop_metrics = serve_worker_metrics(settings.worker_metrics_host, settings.worker_metrics_port)
            exporting.callback(stop_metrics)
        await _poll(settings, runtime, stop or asyncio.Event())


async def _poll(settings: Settings, runtime: Runtime | None, stop: asyncio.Event) -> None:
    """``run_worker`` on a client over ``runtime`` (the default one when None)."""
    services = build_services(settings)
    client = await temporal_connector(settings, runtime)()
    activities = build_activities(services)
    try:
        try:
            activities.pool.start()
        except SandboxUnavailableError as exc:  # every load will say so too (retried); the light work goes on
            log.error("no warm model loaders: %s", exc)
        with ThreadPoolExecutor(max_workers=ACTIVITY_THREADS, thread_name_prefix="calabi-activity") as executor:
            async with AsyncExitStack() as running:
                for worker in workers(client, activities, task_queue=settings.temporal_task_queue,
                                      heavy_slots=settings.heavy_activity_slots, executor=executor,
                                      graceful_shutdown_timeout=timedelta(seconds=10),
                                      interceptors=[ActivityMetrics()]):
                    await running.enter_async_context(worker)
                log.info("worker polling %s (and %s, %d slots) on %s", settings.temporal_task_queue,
                         heavy_task_queue(settings.temporal_task_queue), settings.heavy_activity_slots,
                         settings.resolved_temporal_address())
                reconciling = asyncio.create_task(build_reconciler(services, client).run(
                    stop, every=timedelta(seconds=settings.reconcile_every_s)))
                await stop.wait()
                await reconciling
    finally:
        activities.pool.close()
        services.close()
        gc.collect()  # let Temporal's bridge objects die while the loop is alive (sdk-python#300)
        await asyncio.sleep(0.1)


def main() -> None:
    """Entry point for ``python worker.py``: settings from the environment."""
    settings = Settings()
    if settings.log_format == "json":
        use_json_logs()
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(run_worker(settings))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
