"""Calabi's Prometheus metrics: their one definition, the committed-event observer, and the exposition.

Every label has a bounded set of values: route templates (never raw paths), methods, statuses, stage,
check and activity names. Model names never become labels. The counters of registry writes are
incremented once the write's transaction has committed (``RegistryContext.observer``), in whichever
process wrote it: the API for direct writes, the worker for a promotion's apply.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``calabi serve --workers N`` > 1 sets it to a directory of its own
before the worker processes start) each process writes its samples there and a scrape, answered by any
one process, adds them up (``MultiProcessCollector``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector

from calabi.processes import METRICS_DIR_ENV
from registry_store.committed_events import CommittedEvent

__all__ = [
    "ALIAS_MOVES", "CHECK_DURATION", "CHECK_OUTCOMES", "GATEWAY_UPSTREAM_ERRORS", "HTTP_DURATION", "HTTP_REQUESTS",
    "PROMOTIONS_BY_STATUS", "PROMOTION_TIME_IN_STATUS", "PROMOTION_TRANSITIONS", "REGISTRATIONS",
    "STAGE_MOVES", "ACTIVITY_FAILURES", "ACTIVITY_RETRIES", "PromotionsByStatus", "exported_names", "exposition",
    "observe_committed",
]

UNMATCHED_ROUTE = "<unmatched>"
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_STATUS_SECONDS = (1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 4 * 3600.0, 86400.0, 3 * 86400.0, 7 * 86400.0,
                   30 * 86400.0)

HTTP_REQUESTS = Counter("calabi_http_requests", "HTTP requests answered, by route template, method and status",
                        ["route", "method", "status"])
HTTP_DURATION = Histogram("calabi_http_request_duration_seconds", "Time to answer an HTTP request, by route template",
                          ["route", "method"], buckets=_SECONDS)
REGISTRATIONS = Counter("calabi_registrations", "Model versions registered (committed)")
STAGE_MOVES = Counter("calabi_stage_moves", "Versions moved to a stage (committed), by the stage entered",
                      ["stage"])
ALIAS_MOVES = Counter("calabi_alias_moves", "Aliases set or deleted (committed)", ["operation"])
PROMOTION_TRANSITIONS = Counter("calabi_promotion_transitions", "Promotions entering a status (committed)",
                                ["status"])
PROMOTION_TIME_IN_STATUS = Histogram("calabi_promotion_time_in_status_seconds",
                                     "How long a promotion stayed in a status it left", ["status"],
                                     buckets=_STATUS_SECONDS)
CHECK_DURATION = Histogram("calabi_check_duration_seconds", "Time to evaluate one promotion check", ["check"],
                           buckets=_SECONDS)
CHECK_OUTCOMES = Counter("calabi_check_outcomes", "Promotion check outcomes (passed, failed, error)",
                         ["check", "outcome"])
ACTIVITY_RETRIES = Counter("calabi_activity_retries", "Activity attempts after the first", ["activity"])
ACTIVITY_FAILURES = Counter("calabi_activity_failures", "Activity attempts that raised", ["activity"])
GATEWAY_UPSTREAM_ERRORS = Counter("calabi_tracking_gateway_upstream_errors",
                                  "Tracking-server calls that failed (unreachable) or answered 5xx", ["kind"])
log = logging.getLogger(__name__)
PROMOTIONS_BY_STATUS = "calabi_promotions"
"""A gauge computed at scrape from the database (one GROUP BY): promotions in each status."""

_COUNTERS = (HTTP_REQUESTS, REGISTRATIONS, STAGE_MOVES, ALIAS_MOVES, PROMOTION_TRANSITIONS, CHECK_OUTCOMES,
             ACTIVITY_RETRIES, ACTIVITY_FAILURES, GATEWAY_UPSTREAM_ERRORS)
_HISTOGRAMS = (HTTP_DURATION, PROMOTION_TIME_IN_STATUS, CHECK_DURATION)
_ALIAS_ACTIONS = {"set_alias": "set", "delete_alias": "delete"}


def observe_committed(event: CommittedEvent) -> None:
    """Count a committed registry write (the ``RegistryContext`` observer)."""
    if event.action == "create_model_version":
        REGISTRATIONS.inc()
    elif event.action == "transition_stage" and isinstance(event.after.get("stage"), str):
        STAGE_MOVES.labels(stage=event.after["stage"]).inc()
    elif event.action in _ALIAS_ACTIONS:
        ALIAS_MOVES.labels(operation=_ALIAS_ACTIONS[event.action]).inc()
    elif event.action == "promotion_state" and isinstance(event.after.get("status"), str):
        PROMOTION_TRANSITIONS.labels(status=event.after["status"]).inc()
        left = event.before.get("status")
        if isinstance(left, str) and event.status_since_ms is not None:
            PROMOTION_TIME_IN_STATUS.labels(status=left).observe(
                max(0.0, (event.timestamp - event.status_since_ms) / 1000))


class PromotionsByStatus(Collector):
    """The ``calabi_promotions{status}`` gauge, read from the database at each scrape."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        """The gauge; left out of the scrape (the rest still answers) when the database cannot be read."""
        try:
            counts = self._counts()
        except Exception as exc:
            log.warning("calabi_promotions left out of the scrape: %s: %s", type(exc).__name__, exc)
            return
        gauge = GaugeMetricFamily(PROMOTIONS_BY_STATUS, "Promotions in each status (read at scrape)",
                                  labels=["status"])
        for status, count in sorted(counts.items()):
            gauge.add_metric([status], count)
        yield gauge


def exposition(*extra: Collector) -> bytes:
    """The metrics in Prometheus text format: this process's (or, in multiprocess mode, every process's)
    plus ``extra`` collectors."""
    if os.environ.get(METRICS_DIR_ENV):
        base = CollectorRegistry()
        MultiProcessCollector(base)  # type: ignore[no-untyped-call]
    else:
        base = REGISTRY
    added = CollectorRegistry()
    for collector in extra:
        added.register(collector)
    return generate_latest(base) + generate_latest(added)


def exported_names() -> set[str]:
    """Every sample name Calabi exports (what a dashboard expression may use)."""
    names = {PROMOTIONS_BY_STATUS}
    for counter in _COUNTERS:
        names.add(f"{counter._name}_total")
    for histogram in _HISTOGRAMS:
        names.update(f"{histogram._name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return names
