"""The run: every server up at once, each measurement taken on each server back to back.

All servers under test are started first and stay up; only the one being measured gets
requests (idle workers cost next to nothing). Every row of the report is measured on each
server in turn, seconds apart, in a rotating order, so a burst of load from elsewhere on the
machine hits all of them alike instead of one server's whole run.
"""

from __future__ import annotations

import math
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient

from bench.report import ServerResults
from bench.servers import MLFLOW_ASYNCIO, RunningServer, ServerSpec, start_server, stop_server
from bench.split import PROCESSES, SPLIT_OPS, THREADS_PER_PROCESS, ClientPool, PoolError
from bench.stats import Stats, merge_rounds
from bench.workload import Op, Registry, drive, nagle_check, scale_model

__all__ = [
    "FULL",
    "MATRIX_OPS",
    "QUICK",
    "SCALE_OPS",
    "THROUGHPUT_OPS",
    "Config",
    "nagle_demo",
    "run_benchmark",
]

MATRIX_OPS = ["create version", "get version", "get by alias", "get-latest-versions", "transition", "search"]
SCALE_OPS = ["get by alias", "get-latest-versions", "transition"]
THROUGHPUT_OPS = ["transition", "get-latest-versions"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class Config:
    """How much to run."""

    mode: str
    threads: tuple[int, ...]
    calls_single: int
    calls_per_thread: int
    cap_s: float
    scales: tuple[int, ...]
    scale_calls: int
    scale_cap_s: float
    throughput_at: int
    throughput_threads: int
    throughput_calls_per_thread: int
    populate_threads: int
    populate_cap_s: float
    rounds: int
    """The matrix is run this many times, interleaved; rows pool latencies, median the throughput."""

    @property
    def sizes(self) -> list[int]:
        """Every size the large model is grown to, ascending."""
        return sorted({*self.scales, self.throughput_at})


FULL = Config("full", (1, 8), 70, 14, 6, (100, 1_000, 10_000), 300, 20, 5_000, 8, 25, 8, 420, 3)
QUICK = Config("quick", (1, 8), 40, 10, 8, (100, 500, 1_000), 30, 8, 1_000, 8, 8, 8, 120, 1)


@dataclass
class _Target:
    """One server under test and its client-side state."""

    spec: ServerSpec
    workdir: Path
    server: RunningServer
    reg: Registry
    results: ServerResults
    reuse_from: _Target | None = None
    snapshots: dict[str, Path] | None = None


def summary(stats: Stats) -> str:
    """One progress line's numbers."""
    errors = f", {stats.errors} errors ({stats.first_error})" if stats.errors else ""
    capped = ", time-capped" if stats.capped else ""
    return (
        f"{stats.ops_per_s:8.1f} ops/s  p50 {stats.p50:7.2f} ms  p99 {stats.p99:7.2f} ms  n={stats.n}  "
        f"CPU/call: server {stats.server_cpu_ms_per_call:.2f} ms, client {stats.client_cpu_ms_per_call:.2f} ms "
        f"({stats.client_cores:.2f} cores){capped}{errors}"
    )


def _snapshot(db: Path, dest: Path) -> None:
    """A consistent copy of a live SQLite database (the backup API: safe with WAL and a running server)."""
    dest.unlink(missing_ok=True)
    with closing(sqlite3.connect(db)) as src, closing(sqlite3.connect(dest)) as out:
        src.backup(out)


def _restore(snapshot: Path, db: Path) -> None:
    """Put a snapshot in place of a stopped server's database."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(snapshot, db)


def _rotated(targets: list[_Target], turn: int) -> list[_Target]:
    """The targets starting at a different one each turn (no server is always measured first)."""
    k = turn % len(targets)
    return targets[k:] + targets[:k]


def _start(spec: ServerSpec, root: Path, token: str, calabi_workers: int, cfg: Config, log: Log) -> _Target:
    workdir = root / spec.key
    server = start_server(spec, workdir, token=token, calabi_workers=calabi_workers)
    log(f"   {spec.label}: up in {server.started_s:.1f}s at {server.url}")
    reg = Registry(MlflowClient(tracking_uri=server.url), server.source, threads=max(cfg.threads))
    results = ServerResults(spec.key, spec.label, server.display_command, startup_s=server.started_s)
    started = time.perf_counter()
    reg.setup_matrix()
    reg.setup_scale(cfg.scales)
    ops = reg.matrix_ops()
    for name in ("get version", "get by alias", "get-latest-versions", "search"):  # warm every worker
        drive(ops[name], threads=max(cfg.threads), calls_per_thread=5, time_cap_s=30)
    log(f"   {spec.label}: fixtures and warm-up in {time.perf_counter() - started:.1f}s")
    return _Target(spec, workdir, server, reg, results)


def _measure(target: _Target, op: Op, *, threads: int, calls: int, cap_s: float) -> Stats:
    return drive(op, threads=threads, calls_per_thread=calls, time_cap_s=cap_s, server_cpu=target.server.cpu_seconds)


def _start_pool(targets: list[_Target], log: Log) -> ClientPool | None:
    """The 2-process client pool, its clients warmed on every server; None if it fails."""
    started = time.perf_counter()
    try:
        pool = ClientPool()
    except PoolError as exc:
        _pool_failed(targets, exc, log)
        return None
    try:
        for t in targets:  # each worker's own clients: imports, connections
            for name in SPLIT_OPS:
                pool.measure(
                    t.server.url, t.server.source, name, calls_per_thread=2, cap_s=30, server_cpu=t.server.cpu_seconds
                )
    except BaseException as exc:
        pool.close()
        if not isinstance(exc, PoolError):
            raise
        _pool_failed(targets, exc, log)
        return None
    log(f"   {PROCESSES} client processes up and warmed in {time.perf_counter() - started:.1f}s")
    return pool


def _pool_failed(targets: list[_Target], exc: PoolError, log: Log) -> None:
    log(f"   !! {PROCESSES}-process measurement stopped: {exc}")
    for t in targets:
        t.results.split_error = str(exc)


def _split_round(
    pool: ClientPool,
    targets: list[_Target],
    cfg: Config,
    turn: int,
    rounds: dict[tuple[str, str], list[Stats]],
    log: Log,
) -> None:
    """One round of the 2-process measurement: every op on every server (rotating), 8 threads over the
    processes."""
    started = time.perf_counter()
    for k, name in enumerate(SPLIT_OPS):
        for t in _rotated(targets, turn + k):
            stats = pool.measure(
                t.server.url,
                t.server.source,
                name,
                calls_per_thread=cfg.calls_per_thread,
                cap_s=cfg.cap_s,
                server_cpu=t.server.cpu_seconds,
            )
            rounds.setdefault((t.spec.key, name), []).append(stats)
            log(f"   {name:<20} {PROCESSES}x{THREADS_PER_PROCESS} {t.spec.label:<18} {summary(stats)}")
    log(f"   {PROCESSES}-process round in {time.perf_counter() - started:.1f}s")


def _throughput_model_size(cfg: Config) -> int:
    """The scale whose model is measured for throughput on its way up (smallest scale ≥ throughput_at)."""
    return min(size for size in cfg.scales if size >= cfg.throughput_at)


def _grow(targets: list[_Target], goals: dict[int, int], cfg: Config, token: str, tag: str, log: Log) -> None:
    """Grow each large model (by scale) to ``goals[scale]`` versions on every target.

    Targets that reuse another's database are restarted on a copy of it instead.
    """
    for t in targets:
        if t.reuse_from is not None:
            continue
        for size, goal in goals.items():
            model = scale_model(size)
            if t.reg.versions[model] >= goal:
                continue
            populated = t.reg.populate(model, goal, threads=cfg.populate_threads, time_cap_s=cfg.populate_cap_s)
            t.results.populate.append(populated)
            log(
                f"   {t.spec.label}: {model} {populated.from_versions} -> {populated.to_versions} in "
                f"{populated.elapsed_s:.1f}s ({populated.per_s:.0f}/s, {populated.errors} retried errors)"
            )
            if populated.to_versions < goal:
                log(f"   !! only {populated.to_versions} of {goal} versions: {populated.first_error}")
        if t.snapshots is not None:
            t.snapshots[tag] = t.workdir.parent / f"{t.spec.key}-{tag}.db"
            _snapshot(t.workdir / "mlflow.db", t.snapshots[tag])
    for t in targets:
        source = t.reuse_from
        if source is None or source.snapshots is None:
            continue
        stop_server(t.server)
        _restore(source.snapshots[tag], t.workdir / "mlflow.db")
        t.server = start_server(t.spec, t.workdir, token=token)
        t.reg.client = MlflowClient(tracking_uri=t.server.url)
        t.reg.versions = dict(source.reg.versions)
        for warm in t.reg.scale_ops(scale_model(min(cfg.scales))).values():  # fresh workers: imports, connects
            drive(warm, threads=max(cfg.threads), calls_per_thread=2, time_cap_s=30)
        log(f"   {t.spec.label}: restarted on a copy of {source.spec.label}'s database ({tag})")


def run_benchmark(
    specs: list[ServerSpec],
    cfg: Config,
    root: Path,
    *,
    token: str,
    calabi_workers: int,
    grow_each: bool,
    log: Log,
) -> dict[str, ServerResults]:
    """Start every server, run every measurement on each in turn, stop them; the results by server key."""
    targets: list[_Target] = []
    pool: ClientPool | None = None
    try:
        log(f"== starting {', '.join(s.label for s in specs)}; load average {os.getloadavg()[0]:.2f}")
        for spec in specs:
            targets.append(_start(spec, root, token, calabi_workers, cfg, log))
        mlflows = [t for t in targets if t.spec.kind == "mlflow"]
        if mlflows and not grow_each:
            mlflows[0].snapshots = {}
            for other in mlflows[1:]:
                other.reuse_from = mlflows[0]
                other.results.large_model_from = mlflows[0].spec.label

        log("== keep-alive check")
        for t in targets:
            t.results.nagle = nagle_check(t.server.url, token)
            log(f"   {t.spec.label:<20} {t.results.nagle.summary()}")

        log(f"== {PROCESSES} client processes x {THREADS_PER_PROCESS} threads: starting")
        pool = _start_pool(targets, log)
        turn = 0
        rounds: dict[tuple[str, str, int], list[Stats]] = {}
        split_rounds: dict[tuple[str, str], list[Stats]] = {}
        for round_no in range(1, cfg.rounds + 1):
            for threads in cfg.threads:
                calls = cfg.calls_single if threads == 1 else cfg.calls_per_thread
                log(f"== matrix, {threads} thread(s), round {round_no}/{cfg.rounds}; load {os.getloadavg()[0]:.2f}")
                for name in MATRIX_OPS:
                    for t in _rotated(targets, turn):
                        op = t.reg.matrix_ops()[name]
                        stats = _measure(t, op, threads=threads, calls=calls, cap_s=cfg.cap_s)
                        rounds.setdefault((t.spec.key, name, threads), []).append(stats)
                        log(f"   {name:<20} x{threads} {t.spec.label:<18} {summary(stats)}")
                    turn += 1
            if pool is not None:
                log(
                    f"== {PROCESSES} client processes x {THREADS_PER_PROCESS} threads, round "
                    f"{round_no}/{cfg.rounds}; load {os.getloadavg()[0]:.2f}"
                )
                try:
                    _split_round(pool, targets, cfg, round_no - 1, split_rounds, log)
                except PoolError as exc:
                    _pool_failed(targets, exc, log)
                    pool.close()
                    pool = None
        if pool is not None:
            pool.close()
            pool = None
        for t in targets:
            for name in MATRIX_OPS:
                for threads in cfg.threads:
                    t.results.matrix[(name, threads)] = merge_rounds(rounds[(t.spec.key, name, threads)])
            for name in SPLIT_OPS:
                if (t.spec.key, name) in split_rounds:
                    t.results.split[name] = merge_rounds(split_rounds[(t.spec.key, name)])

        tput_size = _throughput_model_size(cfg)
        log(f"== large models: growing to {cfg.throughput_at:,}; load average {os.getloadavg()[0]:.2f}")
        _grow(
            targets,
            {s: min(s, cfg.throughput_at) if s == tput_size else s for s in cfg.scales},
            cfg,
            token,
            "throughput",
            log,
        )
        tput_model = scale_model(tput_size)
        for name in THROUGHPUT_OPS:
            for t in _rotated(targets, turn):
                t.results.throughput_versions = t.reg.versions[tput_model]
                op = t.reg.scale_ops(tput_model)[name]
                calls = cfg.throughput_calls_per_thread
                stats = _measure(t, op, threads=cfg.throughput_threads, calls=calls, cap_s=cfg.cap_s)
                t.results.scale_throughput[name] = stats
                log(
                    f"   {name:<20} @{t.reg.versions[tput_model]:<6} x{cfg.throughput_threads} {t.spec.label:<18} "
                    f"{summary(stats)}"
                )
            turn += 1
        if tput_size > cfg.throughput_at:
            log(f"== large models: growing to {tput_size:,}; load average {os.getloadavg()[0]:.2f}")
            _grow(targets, {tput_size: tput_size}, cfg, token, "final", log)

        calls = math.ceil(cfg.scale_calls / cfg.rounds)
        cap_s = cfg.scale_cap_s / cfg.rounds
        latency: dict[tuple[str, str, int], list[Stats]] = {}
        for round_no in range(1, cfg.rounds + 1):
            log(f"== large models: latency, round {round_no}/{cfg.rounds}; load {os.getloadavg()[0]:.2f}")
            for size in cfg.scales:
                for name in SCALE_OPS:
                    for t in _rotated(targets, turn):
                        op = t.reg.scale_ops(scale_model(size))[name]
                        stats = _measure(t, op, threads=1, calls=calls, cap_s=cap_s)
                        latency.setdefault((t.spec.key, name, size), []).append(stats)
                        log(f"   {name:<20} @{size:<6} {t.spec.label:<18} {summary(stats)}")
                    turn += 1
        for t in targets:
            for (key, name, size), runs in latency.items():
                if key == t.spec.key:
                    t.results.scale_latency[(name, size)] = merge_rounds(runs)
    finally:
        if pool is not None:
            pool.close()
        for t in targets:
            stop_server(t.server)
    return {t.spec.key: t.results for t in targets}


def nagle_demo(root: Path, token: str, log: Log) -> ServerResults:
    """MLflow's default form on the plain asyncio loop: only the keep-alive check."""
    spec = MLFLOW_ASYNCIO
    log(f"== {spec.label}: keep-alive check only")
    server = start_server(spec, root / spec.key, token=token)
    results = ServerResults(spec.key, spec.label, server.display_command, startup_s=server.started_s)
    try:
        client = MlflowClient(tracking_uri=server.url)
        client.create_registered_model("main-0")
        client.create_model_version("main-0", server.source, await_creation_for=0)
        drive(lambda _t, _i: client.get_model_version("main-0", "1"), threads=4, calls_per_thread=5, time_cap_s=30)
        results.nagle = nagle_check(server.url, token)
        log(f"   {spec.label:<20} {results.nagle.summary()}")
    finally:
        stop_server(server)
    return results
