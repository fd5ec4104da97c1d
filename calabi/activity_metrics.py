"""The worker's own metrics: activity retries and failures, check durations and outcomes (a worker interceptor),
served by prometheus-client next to the Temporal SDK's metrics (``serve_worker_metrics``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import start_http_server
from temporalio import activity
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from calabi.metrics import ACTIVITY_FAILURES, ACTIVITY_RETRIES, CHECK_DURATION, CHECK_OUTCOMES
from policies.results import CheckResult
from registry_store.errors import UnavailableError

__all__ = ["CHECK_ACTIVITY", "ActivityMetrics", "check_outcome", "serve_worker_metrics"]

CHECK_ACTIVITY = "evaluate_check"


def check_outcome(result: object) -> str:
    """``passed`` or ``failed`` for a check's result; ``error`` when it could not be evaluated (it raised)."""
    if isinstance(result, CheckResult):
        return "passed" if result.passed else "failed"
    return "error"


class ActivityMetrics(Interceptor):
    """Counts every activity attempt after the first and every attempt that raises; times each check."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ObservedActivity(next)


class _ObservedActivity(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        name = info.activity_type
        if info.attempt > 1:
            ACTIVITY_RETRIES.labels(activity=name).inc()
        check = getattr(input.args[0], "name", None) if name == CHECK_ACTIVITY and input.args else None
        started = time.perf_counter()
        result: Any = None
        try:
            result = await self.next.execute_activity(input)
            return result
        except Exception:
            ACTIVITY_FAILURES.labels(activity=name).inc()
            raise
        finally:
            if isinstance(check, str):
                CHECK_DURATION.labels(check=check).observe(time.perf_counter() - started)
                CHECK_OUTCOMES.labels(check=check, outcome=check_outcome(result)).inc()


def serve_worker_metrics(host: str, port: int) -> tuple[Runtime, Callable[[], None]]:
    """A Temporal runtime exporting the SDK's metrics on ``host:port``, and Calabi's metrics (prometheus-client)
    served on ``port + 1``; the function stops the latter. A port that cannot be bound is ``UnavailableError``."""
    try:
        runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"{host}:{port}")))
    except ValueError as exc:  # the SDK's exporter could not bind
        raise UnavailableError(f"cannot export the Temporal SDK's metrics on {host}:{port}: {exc}") from exc
    try:
        server, thread = start_http_server(port + 1, addr=host)
    except OSError as exc:
        raise UnavailableError(f"cannot export Calabi's worker metrics on {host}:{port + 1}: "
                               f"{exc.strerror or exc}") from exc

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return runtime, stop
