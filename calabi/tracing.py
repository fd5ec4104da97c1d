"""OpenTelemetry tracing, on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set: a request's trace runs from the API
route (FastAPI instrumentation) through the Temporal client into the workflow and its activities
(``temporalio.contrib.opentelemetry.TracingInterceptor`` on the client, which the worker inherits).

The exporter (OTLP over HTTP) reads the standard ``OTEL_*`` variables; ``OTEL_SERVICE_NAME`` overrides the
service name each process gives itself.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from temporalio.client import Interceptor

__all__ = ["ENDPOINT_ENV", "instrument_app", "start_tracing", "temporal_interceptors", "tracing_enabled"]

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
_started = False


def tracing_enabled() -> bool:
    """Whether traces are exported (an OTLP endpoint is configured)."""
    return bool(os.environ.get(ENDPOINT_ENV))


def start_tracing(service_name: str) -> None:
    """Install the process's tracer provider, batching spans to the OTLP endpoint (once; no-op when disabled)."""
    global _started
    if _started or not tracing_enabled():
        return
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _started = True


def instrument_app(app: FastAPI) -> None:
    """Trace every request of ``app`` (when tracing is on)."""
    if tracing_enabled():
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app)


def temporal_interceptors() -> list[Interceptor]:
    """The Temporal client's interceptors: the tracing one when tracing is on (the worker inherits it)."""
    if not tracing_enabled():
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor()]
