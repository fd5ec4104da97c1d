"""One request that starts a promotion is one trace: the API route, the workflow and its activities.

The real app (FastAPI instrumentation) and a worker on a client with the tracing interceptor, as
``calabi serve`` and ``calabi worker`` build them when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; the spans
go to the SDK's in-memory exporter. The same worker runs on a runtime exporting the Temporal SDK's metrics
(``--metrics-port``) with Calabi's activity interceptor, and both of its metrics ports are scraped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from uuid import uuid4

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from calabi.activity_metrics import ActivityMetrics, serve_worker_metrics
from calabi.api.app import create_app
from calabi.engine import PromotionService
from calabi.tracing import ENDPOINT_ENV, temporal_interceptors
from policies.status import PromotionStatus
from tests.fixtures.servers import free_port
from tests.workflows.conftest import POLL_S, WAIT_S, Harness
from worker import build_activities, workers


def in_memory_spans() -> InMemorySpanExporter:
    """An exporter on the process's tracer provider (installed here unless a test installed one already)."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def free_port_pair() -> int:
    """A free port whose successor is free too (the worker's two metrics ports)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two adjacent free ports")


def spans_named(spans: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name.startswith(prefix)]


async def test_a_promotion_request_is_one_trace_and_the_worker_exports_metrics(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENDPOINT_ENV, "http://127.0.0.1:9")  # tracing on; spans go to the in-memory exporter
    exporter = in_memory_spans()
    port = free_port_pair()
    runtime, stop_metrics = serve_worker_metrics("127.0.0.1", port)
    config = harness.client.config()
    traced = await Client.connect(
        config["service_client"].config.target_host, namespace=harness.client.namespace,
        data_converter=pydantic_data_converter, interceptors=temporal_interceptors(), runtime=runtime)
    task_queue = f"tq-traced-{uuid4()}"

    async def connect() -> Client:
        return traced

    promotions = PromotionService(harness.registry, connect, task_queue=task_queue)
    app = create_app(dataclasses.replace(harness.services, promotions=promotions))
    model = harness.register()
    _, token = harness.services.users.create_user(harness.admin, name="traced-engineer", roles=["engineer"])
    try:
        with ThreadPoolExecutor(4) as pool:
            light, heavy = workers(traced, build_activities(harness.services), task_queue=task_queue, heavy_slots=1,
                                   executor=pool, interceptors=[ActivityMetrics()])
            async with light, heavy, httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                       base_url="http://127.0.0.1") as client:
                response = await client.post(
                    "/api/v1/promotions", headers={"Authorization": f"Bearer {token}"},
                    json={"model": model, "version": 2, "target_stage": "Production", "justification": "better"})
                assert response.status_code == 201, response.text
                promotion = harness.registry.promotions.get_promotion(harness.viewer, response.json()["id"])
                harness.started.append(promotion.workflow_id)
                deadline = time.monotonic() + WAIT_S
                while harness.read(promotion).status != PromotionStatus.AWAITING_SIGN_OFF:
                    assert time.monotonic() < deadline, f"still {harness.read(promotion).status}"
                    await asyncio.sleep(POLL_S)  # polling a condition with a deadline
                await harness.client.get_workflow_handle(promotion.workflow_id).terminate("test done")
        async with httpx.AsyncClient() as scraper:
            sdk = (await scraper.get(f"http://127.0.0.1:{port}/metrics")).text
            own = (await scraper.get(f"http://127.0.0.1:{port + 1}/metrics")).text
    finally:
        stop_metrics()

    spans = exporter.get_finished_spans()
    route = [s for s in spans if s.kind == trace.SpanKind.SERVER and "/api/v1/promotions" in s.name]
    assert route, [s.name for s in spans]
    trace_id = route[0].context.trace_id
    for prefix in ("StartWorkflow:PromotionWorkflow", "RunWorkflow:PromotionWorkflow",
                   "StartActivity:snapshot_evidence", "RunActivity:snapshot_evidence", "RunActivity:evaluate_check"):
        found = spans_named(spans, prefix)
        assert found, f"no {prefix} span in {sorted({s.name for s in spans})}"
        assert all(span.context.trace_id == trace_id for span in found), prefix

    assert "temporal_" in sdk  # the SDK's own metrics (runtime telemetry)
    assert 'calabi_check_outcomes_total{check="metrics",outcome="passed"}' in own, own
    assert "calabi_check_duration_seconds_bucket" in own
    assert 'calabi_promotion_transitions_total{status="awaiting_sign_off"}' in own  # the worker's own writes
