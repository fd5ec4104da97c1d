"""The 8-thread measurement: 8 client threads split over 2 processes (4 threads each).

One Python process running 8 MLflow client threads is GIL-bound: against a fast server the
client, not the server, sets its throughput, so the 8-thread targets are measured with the
threads in 2 processes (the 1-process form is still run and shown). ``ClientPool`` keeps 2 worker
processes (``spawn`` context) alive for the run; each measurement sends every worker the
same job, all 8 threads (and the parent) start on one cross-process barrier, and the
workers return their calls' latencies, errors and their own process CPU. Thread ``t`` of
worker ``w`` is client thread ``w * 4 + t``: the same models (``main-<t>``, ``create-<t>``)
and calls as the matrix's 8-thread rows. Everything is bounded (barrier, result and stop
timeouts); a worker that dies or does not answer raises ``PoolError``, never a retry.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Barrier

from bench.servers import _die_with_parent
from bench.stats import Stats
from bench.workload import CallLog, Op, call_loop

__all__ = ["PROCESSES", "SPLIT_OPS", "THREADS_PER_PROCESS", "ClientPool", "PoolError"]

SPLIT_OPS = ["create version", "get version", "get by alias", "get-latest-versions", "search"]
PROCESSES = 2
THREADS_PER_PROCESS = 4
READY_TIMEOUT_S = 120.0
"""A spawned worker imports mlflow before it answers; slow on a busy machine, but bounded."""
BARRIER_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 60
"""MLFLOW_HTTP_REQUEST_TIMEOUT in the workers (as in the bench process)."""
RESULT_GRACE_S = REQUEST_TIMEOUT_S + 30.0
"""After the time cap: a call in flight may take up to the request timeout."""
STOP_TIMEOUT_S = 10.0


class PoolError(RuntimeError):
    """A worker process died, timed out or broke the barrier: the measurement did not happen."""


@dataclass(frozen=True)
class _Job:
    url: str
    source: str
    op: str
    calls_per_thread: int
    cap_s: float


@dataclass
class _Part:
    """One worker's share of a measurement (monotonic clock, comparable across processes)."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    capped: bool = False
    started_at: float = math.inf
    finished_at: float = 0.0
    cpu_s: float = 0.0


def _thread(op: Op, index: int, job: _Job, barrier: Barrier) -> tuple[float, CallLog]:
    """One client thread: ``call_loop`` on the monotonic clock (comparable across processes), started
    on the shared barrier; its start time and its calls."""
    barrier.wait(timeout=BARRIER_TIMEOUT_S)
    started = time.monotonic()
    return started, call_loop(op, index, job.calls_per_thread, started + job.cap_s, clock=time.monotonic)


def _worker(conn: Connection, barrier: Barrier, worker: int) -> None:  # pragma: no cover - child process
    """A spawned worker: run jobs from ``conn`` until ``None`` or the parent goes away."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the workers
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # a failure is counted, never retried
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(REQUEST_TIMEOUT_S)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    from mlflow import MlflowClient  # the slow import, here so "ready" means ready

    from bench.workload import Registry

    registries: dict[str, Registry] = {}
    conn.send("ready")
    with ThreadPoolExecutor(max_workers=THREADS_PER_PROCESS, thread_name_prefix="split") as pool:
        while True:
            try:
                job = conn.recv()
            except EOFError:
                return
            if job is None:
                return
            if job.url not in registries:
                registries[job.url] = Registry(
                    MlflowClient(tracking_uri=job.url), job.source, threads=PROCESSES * THREADS_PER_PROCESS
                )
            op = registries[job.url].matrix_ops()[job.op]
            cpu = time.process_time()
            futures = [
                pool.submit(_thread, op, worker * THREADS_PER_PROCESS + t, job, barrier)
                for t in range(THREADS_PER_PROCESS)
            ]
            try:
                threads = [f.result() for f in futures]
            except threading.BrokenBarrierError as exc:
                conn.send(f"barrier broken: {exc!r}")
                return
            cpu = time.process_time() - cpu
            logs = [log for _started, log in threads]
            conn.send(
                _Part(
                    latencies_ms=[x for log in logs for x in log.latencies_ms],
                    errors=sum(log.errors for log in logs),
                    first_error=next((log.first_error for log in logs if log.first_error), None),
                    capped=any(log.capped for log in logs),
                    started_at=min(started for started, _log in threads),
                    finished_at=max(log.finished_at for log in logs),
                    cpu_s=cpu,
                )
            )


class ClientPool:
    """``PROCESSES`` spawned client processes of ``THREADS_PER_PROCESS`` threads each."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")  # the parent has threads: no fork
        self._barrier = ctx.Barrier(PROCESSES * THREADS_PER_PROCESS + 1)
        self._conns: list[Connection] = []
        self._procs: list[BaseProcess] = []
        try:
            for w in range(PROCESSES):
                mine, theirs = ctx.Pipe()
                proc = ctx.Process(target=_worker, args=(theirs, self._barrier, w), name=f"bench-split-{w}")
                proc.daemon = True
                proc.start()
                theirs.close()
                self._conns.append(mine)
                self._procs.append(proc)
            for w in range(PROCESSES):
                if self._receive(w, READY_TIMEOUT_S) != "ready":
                    raise PoolError(f"worker {w} did not start")
        except BaseException:
            self.close()
            raise

    def _receive(self, w: int, timeout: float) -> object:
        conn = self._conns[w]
        try:
            if not conn.poll(max(0.0, timeout)):
                raise PoolError(f"worker {w} sent nothing within {timeout:.0f}s")
            return conn.recv()
        except (EOFError, OSError) as exc:
            raise PoolError(f"worker {w} is gone (exit code {self._procs[w].exitcode})") from exc

    def measure(
        self, url: str, source: str, op: str, *, calls_per_thread: int, cap_s: float, server_cpu: Callable[[], float]
    ) -> Stats:
        """Run ``op`` from all client threads at once; ``server_cpu`` is read before and after."""
        job = _Job(url, source, op, calls_per_thread, cap_s)
        for w, conn in enumerate(self._conns):
            try:
                conn.send(job)
            except OSError as exc:
                raise PoolError(f"worker {w} is gone (exit code {self._procs[w].exitcode})") from exc
        server_start = server_cpu()
        try:
            self._barrier.wait(timeout=BARRIER_TIMEOUT_S)
        except threading.BrokenBarrierError as exc:
            raise PoolError(
                f"the start barrier broke (a worker did not arrive within {BARRIER_TIMEOUT_S:.0f}s)"
            ) from exc
        deadline = time.monotonic() + cap_s + RESULT_GRACE_S
        parts: list[_Part] = []
        for w in range(PROCESSES):
            reply = self._receive(w, deadline - time.monotonic())
            if not isinstance(reply, _Part):
                raise PoolError(f"worker {w}: {reply}")
            parts.append(reply)
        server_used = server_cpu() - server_start
        return Stats(
            threads=PROCESSES * THREADS_PER_PROCESS,
            latencies_ms=[x for p in parts for x in p.latencies_ms],
            errors=sum(p.errors for p in parts),
            elapsed_s=max(p.finished_at for p in parts) - min(p.started_at for p in parts),
            first_error=next((p.first_error for p in parts if p.first_error), None),
            capped=any(p.capped for p in parts),
            client_cpu_s=sum(p.cpu_s for p in parts),
            server_cpu_s=server_used,
        )

    def close(self) -> None:
        """Ask every worker to stop; terminate (then kill) any that do not within the timeout."""
        self._barrier.abort()  # threads waiting for a start that will not come fail at once
        for conn in self._conns:
            try:
                conn.send(None)
            except OSError:
                pass
        for proc in self._procs:
            proc.join(timeout=STOP_TIMEOUT_S)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=STOP_TIMEOUT_S)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=STOP_TIMEOUT_S)
        for conn in self._conns:
            conn.close()
        self._conns, self._procs = [], []

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
