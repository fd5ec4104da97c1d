"""The registry operations, the fixtures they need, and a bounded multi-threaded driver.

Every call goes through ``mlflow.MlflowClient`` (registry calls only), the same client for
every server. Every loop is bounded twice: by a call count and by a wall-clock cap.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests
from mlflow import MlflowClient

from bench.stats import Stats

__all__ = [
    "ALIAS",
    "MAIN_VERSIONS",
    "CallLog",
    "NagleResult",
    "Op",
    "PopulateResult",
    "Registry",
    "call_loop",
    "drive",
    "nagle_check",
    "scale_model",
]

Op = Callable[[int, int], object]
"""One call: ``op(thread_index, call_index)``."""

ALIAS = "bench"  # not "champion": Calabi protects that alias (break-glass)
MAIN_VERSIONS = 20
"""Versions in each of the small "main-<t>" models used by the 1/8-thread matrix."""
TRANSITION_WINDOW = 10
"""The matrix's transitions cycle versions 11..20 into Production, archiving the incumbent."""
SCALE_TRANSITION_WINDOW = 64
DECORATE_AT = 100
"""A large model gets its alias and stages once it has this many versions."""


def scale_model(size: int) -> str:
    """The name of the large model measured at ``size`` versions."""
    return f"scale-{size}"


@dataclass
class CallLog:
    """One client thread's calls: the successful ones' latencies, the failures, whether the cap stopped it."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    capped: bool = False
    finished_at: float = 0.0


def call_loop(
    op: Op, index: int, calls: int, deadline: float, *, clock: Callable[[], float], halt: threading.Event | None = None
) -> CallLog:
    """Call ``op(index, i)`` up to ``calls`` times, stopping at ``deadline`` (read on ``clock``) or ``halt``.

    Failed calls are counted, not timed; a thread whose calls mostly fail stops early.
    """
    log = CallLog()
    for call in range(calls):
        now = clock()
        if now >= deadline or (halt is not None and halt.is_set()):
            log.capped = now >= deadline
            break
        try:
            op(index, call)
        except Exception as exc:  # a failed call is data: counted and reported
            log.errors += 1
            if log.first_error is None:
                log.first_error = f"{type(exc).__name__}: {str(exc)[:300]}"
            if log.errors >= max(10, calls // 2):
                break  # a server that only fails is not worth the time cap
            continue
        log.latencies_ms.append((clock() - now) * 1000)
    log.finished_at = clock()
    return log


def drive(
    op: Op,
    *,
    threads: int,
    calls_per_thread: int,
    time_cap_s: float,
    stop: threading.Event | None = None,
    server_cpu: Callable[[], float] | None = None,
) -> Stats:
    """Run ``op`` from ``threads`` threads, each at most ``calls_per_thread`` times and ``time_cap_s``.

    Threads start together (a barrier); throughput is successful calls over the wall time
    from the start to the last thread's finish. Failed calls are counted, not timed.
    ``server_cpu`` (the server's CPU seconds so far) is read before and after the run.
    """
    barrier = threading.Barrier(threads + 1)
    halt = stop or threading.Event()
    start_box: list[float] = []

    def worker(index: int) -> CallLog:
        barrier.wait(timeout=60)
        return call_loop(op, index, calls_per_thread, start_box[0] + time_cap_s, clock=time.perf_counter, halt=halt)

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bench") as pool:
        server_start = server_cpu() if server_cpu else math.nan
        futures = [pool.submit(worker, i) for i in range(threads)]
        cpu_start = time.process_time()
        start_box.append(time.perf_counter())
        barrier.wait(timeout=60)
        try:
            results = [f.result() for f in futures]
        except BaseException:
            halt.set()
            raise
        cpu = time.process_time() - cpu_start
    server_used = server_cpu() - server_start if server_cpu else math.nan
    start = start_box[0]
    latencies = [x for r in results for x in r.latencies_ms]
    first_error = next((r.first_error for r in results if r.first_error), None)
    return Stats(
        threads=threads,
        latencies_ms=latencies,
        errors=sum(r.errors for r in results),
        elapsed_s=max(r.finished_at for r in results) - start,
        first_error=first_error,
        capped=any(r.capped for r in results),
        client_cpu_s=cpu,
        server_cpu_s=server_used,
    )


@dataclass
class PopulateResult:
    """Growing one model through the client (itself a create-throughput measurement at scale)."""

    model: str
    from_versions: int
    to_versions: int
    created: int
    errors: int
    elapsed_s: float
    threads: int
    first_error: str | None = None

    @property
    def per_s(self) -> float:
        """Versions created per second."""
        return self.created / self.elapsed_s if self.elapsed_s > 0 else math.nan


class Registry:
    """The benchmarked registry calls, over one ``MlflowClient``, for one server."""

    def __init__(self, client: MlflowClient, source: str, *, threads: int) -> None:
        self.client = client
        self.source = source
        self.threads = threads
        self.versions: dict[str, int] = {}
        """Versions each large model has (as far as this client created them)."""

    # -- fixtures ----------------------------------------------------------------------------

    def create(self, model: str) -> int:
        """Register one version of ``model`` (no status polling) and return its number."""
        mv = self.client.create_model_version(model, self.source, await_creation_for=0)
        return int(mv.version)

    def setup_matrix(self) -> None:
        """``main-<t>``: MAIN_VERSIONS versions, alias, one version per stage; ``create-<t>``: empty."""
        for t in range(self.threads):
            self.client.create_registered_model(f"main-{t}")
            self.client.create_registered_model(f"create-{t}")

        def fill(t: int, _call: int) -> None:
            name = f"main-{t}"
            for _ in range(MAIN_VERSIONS):
                self.create(name)
            self.client.set_registered_model_alias(name, ALIAS, "10")
            self.client.transition_model_version_stage(name, "3", "Archived")
            self.client.transition_model_version_stage(name, "5", "Staging")
            self.client.transition_model_version_stage(name, "10", "Production", archive_existing_versions=True)

        stats = drive(fill, threads=self.threads, calls_per_thread=1, time_cap_s=300)
        if stats.errors:
            raise RuntimeError(f"matrix fixtures failed: {stats.first_error}")

    def setup_scale(self, sizes: Sequence[int]) -> None:
        """One large model per size, created empty; alias and stages are set at 100 versions."""
        for size in sizes:
            self.client.create_registered_model(scale_model(size))
            self.versions[scale_model(size)] = 0

    def decorate(self, model: str) -> None:
        """Alias ``bench`` → 50, and one version in each of Archived, Staging and Production."""
        self.client.set_registered_model_alias(model, ALIAS, "50")
        self.client.transition_model_version_stage(model, "30", "Archived")
        self.client.transition_model_version_stage(model, "40", "Staging")
        self.client.transition_model_version_stage(model, "60", "Production", archive_existing_versions=True)

    def populate(self, model: str, target: int, *, threads: int, time_cap_s: float) -> PopulateResult:
        """Create versions of ``model`` (``threads`` at once) until it has ``target``; decorate at 100."""
        if self.versions[model] < DECORATE_AT <= target:
            first = self._populate(model, DECORATE_AT, threads=threads, time_cap_s=time_cap_s)
            self.decorate(model)
            rest = self._populate(model, target, threads=threads, time_cap_s=max(1.0, time_cap_s - first.elapsed_s))
            return PopulateResult(
                model,
                first.from_versions,
                rest.to_versions,
                first.created + rest.created,
                first.errors + rest.errors,
                first.elapsed_s + rest.elapsed_s,
                threads,
                first.first_error or rest.first_error,
            )
        return self._populate(model, target, threads=threads, time_cap_s=time_cap_s)

    def _populate(self, model: str, target: int, *, threads: int, time_cap_s: float) -> PopulateResult:
        lock = threading.Lock()
        need = max(0, target - self.versions[model])
        state = {"issued": 0, "created": 0, "errors": 0, "max_version": self.versions[model]}
        errors_allowed = 50 + need // 20
        first_error: list[str] = []
        start = time.perf_counter()
        deadline = start + time_cap_s

        def worker(_t: int, _call: int) -> None:
            for _ in range(need + errors_allowed):  # bounded: every pass issues or fails once
                with lock:
                    if state["issued"] >= need or state["errors"] > errors_allowed:
                        return
                    state["issued"] += 1
                if time.perf_counter() > deadline:
                    return
                try:
                    version = self.create(model)
                except Exception as exc:  # contention on the server: retry the ticket, bounded
                    with lock:
                        state["issued"] -= 1
                        state["errors"] += 1
                        if not first_error:
                            first_error.append(f"{type(exc).__name__}: {str(exc)[:300]}")
                    continue
                with lock:
                    state["created"] += 1
                    state["max_version"] = max(state["max_version"], version)

        drive(worker, threads=threads, calls_per_thread=1, time_cap_s=time_cap_s + 5)
        elapsed = time.perf_counter() - start
        before = self.versions[model]
        self.versions[model] = state["max_version"]
        return PopulateResult(
            model,
            before,
            self.versions[model],
            state["created"],
            state["errors"],
            elapsed,
            threads,
            first_error[0] if first_error else None,
        )

    # -- the 1/8-thread matrix -------------------------------------------------------------------

    def matrix_ops(self) -> dict[str, Op]:
        """The operations of the throughput/latency matrix; thread ``t`` works on its own model."""
        c = self.client

        def get_version(t: int, i: int) -> object:
            return c.get_model_version(f"main-{t}", str(1 + i % MAIN_VERSIONS))

        def get_by_alias(t: int, _i: int) -> object:
            return c.get_model_version_by_alias(f"main-{t}", ALIAS)

        def get_latest(t: int, _i: int) -> object:
            return c.get_latest_versions(f"main-{t}")

        def search(t: int, _i: int) -> object:
            return c.search_model_versions(f"name='main-{t}'")

        def transition(t: int, i: int) -> object:
            version = MAIN_VERSIONS - TRANSITION_WINDOW + 1 + i % TRANSITION_WINDOW
            return c.transition_model_version_stage(
                f"main-{t}", str(version), "Production", archive_existing_versions=True
            )

        def create_version(t: int, _i: int) -> object:
            return self.create(f"create-{t}")

        return {
            "get version": get_version,
            "get by alias": get_by_alias,
            "get-latest-versions": get_latest,
            "search": search,
            "transition": transition,
            "create version": create_version,
        }

    # -- the large model ---------------------------------------------------------------------------

    def scale_ops(self, model: str) -> dict[str, Op]:
        """Operations on a large model; transitions cycle its newest versions into Production."""
        c = self.client

        def get_by_alias(_t: int, _i: int) -> object:
            return c.get_model_version_by_alias(model, ALIAS)

        def get_latest(_t: int, _i: int) -> object:
            return c.get_latest_versions(model)

        def transition(t: int, i: int) -> object:
            offset = (t * 8 + i) % SCALE_TRANSITION_WINDOW
            version = max(1, self.versions[model] - offset)
            return c.transition_model_version_stage(model, str(version), "Production", archive_existing_versions=True)

        return {"get by alias": get_by_alias, "get-latest-versions": get_latest, "transition": transition}


@dataclass
class NagleResult:
    """Latency of one cheap GET on a kept-alive connection and on fresh connections."""

    keepalive: Stats
    fresh: Stats
    server_closes: bool

    @property
    def stalls(self) -> bool:
        """A kept-alive p50 near the 40 ms delayed-ACK timer, far above a fresh connection's."""
        if self.server_closes:
            return False
        return self.keepalive.p50 >= 30 and self.keepalive.p50 >= self.fresh.p50 + 20

    def summary(self) -> str:
        """One progress line."""
        return (
            f"kept-alive p50 {self.keepalive.p50:.2f} ms, fresh-connection p50 {self.fresh.p50:.2f} ms: "
            f"{self.verdict()}"
        )

    def verdict(self) -> str:
        """One phrase for the report."""
        if self.server_closes:
            return "n/a: server closes every connection"
        return "STALLS (~40 ms per response)" if self.stalls else "no stall"


def nagle_check(url: str, token: str, *, calls: int = 60, time_cap_s: float = 20) -> NagleResult:
    """GET one version ``calls`` times on one kept-alive connection, then on fresh ones."""
    target = f"{url}/api/2.0/mlflow/model-versions/get"
    params = {"name": "main-0", "version": "1"}
    headers = {"Authorization": f"Bearer {token}"}
    closes: list[bool] = []
    with requests.Session() as session:
        session.get(target, params=params, headers=headers, timeout=30).raise_for_status()

        def keepalive(_t: int, _i: int) -> None:
            response = session.get(target, params=params, headers=headers, timeout=30)
            response.raise_for_status()
            closes.append(response.headers.get("connection", "").lower() == "close")

        kept = drive(keepalive, threads=1, calls_per_thread=calls, time_cap_s=time_cap_s)

    def fresh(_t: int, _i: int) -> None:
        response = requests.get(target, params=params, headers={**headers, "Connection": "close"}, timeout=30)
        response.raise_for_status()

    new = drive(fresh, threads=1, calls_per_thread=calls, time_cap_s=time_cap_s)
    return NagleResult(kept, new, server_closes=bool(closes) and all(closes))
