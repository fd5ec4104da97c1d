"""The scale benchmark: Calabi on PostgreSQL at 1,000 models × 100 versions against the same at 1 × 100.

One PostgreSQL (started like ``tests/fixtures/postgres.py``, durability off, 127.0.0.1) holds two
databases, each served by its own ``calabi serve --no-temporal --no-tracking``:

* small: one model, ``scale-0000``, of 100 versions registered through the API;
* large: the same model registered the same way, then cloned 999 times in bulk (``bench.scale_seed``).

Both templates get alias ``bench`` → 50, version 30 Archived and 40 Staging (Production is reached
only by a promotion or an admin's break-glass move, which opens a review: not cloned). The ops run
from ``threads`` client threads at once over raw HTTP (kept-alive sessions): get-by-alias and
get-latest-versions of a random model, and Staging↔None moves of random versions (each thread owns
its own versions, so moves never collide). Small and large are measured alternately, ``rounds``
times, and the rounds pooled. Then a second replica on the large database (same data dir) and the
same ops with the threads split over both replicas, against one replica: throughput only.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from mlflow import MlflowClient

from bench.scale_plan import TEMPLATE, clone_name
from bench.scale_seed import SeedResult, check_invariants, seed_clones
from bench.servers import CALABI_API_ONLY, RunningServer, start_server, stop_server
from bench.stats import Stats, merge_rounds
from bench.workload import Op, drive
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.postgres import start_server as start_postgres
from tests.fixtures.postgres import stop_server as stop_postgres

__all__ = ["FULL", "OPS", "QUICK", "ScaleConfig", "ScaleResults", "run_scale"]

Log = Callable[[str], None]
OPS = ("get by alias", "get-latest-versions", "transition")
ALIAS = "bench"
DECORATED = {30: "Archived", 40: "Staging"}
REQUEST_TIMEOUT_S = 60


@dataclass(frozen=True)
class ScaleConfig:
    """How much to run."""

    mode: str
    models: int
    versions: int
    threads: int
    calls_per_thread: int
    rounds: int
    cap_s: float


FULL = ScaleConfig("full", 1000, 100, 8, 50, 4, 40)
QUICK = ScaleConfig("quick", 20, 100, 8, 15, 1, 20)


@dataclass
class ScaleResults:
    """What the scale benchmark measured."""

    cfg: ScaleConfig
    postgres: str = ""
    commands: dict[str, str] = field(default_factory=dict)
    template_s: float = 0.0
    seed: SeedResult | None = None
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    audit: dict[str, Any] = field(default_factory=dict)
    latency: dict[tuple[str, str], Stats] = field(default_factory=dict)
    """(op, "small" | "large") → pooled rounds."""
    replicas: dict[tuple[str, int], Stats] = field(default_factory=dict)
    """(op, replicas) → the large database's ops with the threads split over that many replicas."""


class _Api:
    """Raw HTTP to one or more replicas; one kept-alive session per client thread."""

    def __init__(self, urls: list[str], token: str) -> None:
        self.urls = urls
        self.headers = {"Authorization": f"Bearer {token}"}
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update(self.headers)
            self._local.session = session
        return session

    def call(self, thread: int, method: str, path: str, **kwargs: Any) -> Any:
        url = self.urls[thread % len(self.urls)] + "/api/2.0/mlflow" + path
        response = self._session().request(method, url, timeout=REQUEST_TIMEOUT_S, **kwargs)
        if response.status_code != 200:
            raise RuntimeError(f"{method} {path}: HTTP {response.status_code} {response.text[:200]}")
        return response.json()


def _ops(api: _Api, models: int, cfg: ScaleConfig, seed: int, stages: dict[tuple[str, int], str]) -> dict[str, Op]:
    """The measured calls; thread ``t`` moves only versions ≡ t (mod threads), never the decorated ones.

    ``stages`` is what the moves left in the database (shared by every op set on it; unmoved: None).
    """
    rngs = [random.Random(seed * 1000 + t) for t in range(cfg.threads)]
    owned = [[v for v in range(1, cfg.versions + 1) if v % cfg.threads == t and v not in DECORATED]
             for t in range(cfg.threads)]

    def model(t: int) -> str:
        return clone_name(rngs[t].randrange(models))

    def by_alias(t: int, _i: int) -> object:
        return api.call(t, "GET", "/registered-models/alias", params={"name": model(t), "alias": ALIAS})

    def latest(t: int, _i: int) -> object:
        return api.call(t, "POST", "/registered-models/get-latest-versions", json={"name": model(t)})

    def transition(t: int, _i: int) -> object:
        key = (model(t), rngs[t].choice(owned[t]))
        stage = "Staging" if stages.get(key, "None") == "None" else "None"
        stages[key] = stage
        return api.call(t, "POST", "/model-versions/transition-stage",
                        json={"name": key[0], "version": str(key[1]), "stage": stage,
                              "archive_existing_versions": False})

    return {"get by alias": by_alias, "get-latest-versions": latest, "transition": transition}


def _template(server: RunningServer, versions: int) -> float:
    """Register the template model through the mlflow client; the seconds it took."""
    started = time.perf_counter()
    client = MlflowClient(tracking_uri=server.url)
    client.create_registered_model(TEMPLATE)
    for _ in range(versions):
        client.create_model_version(TEMPLATE, server.source, await_creation_for=0)
    client.set_registered_model_alias(TEMPLATE, ALIAS, "50")
    for version, stage in DECORATED.items():
        client.transition_model_version_stage(TEMPLATE, str(version), stage)
    return time.perf_counter() - started


def _audit_verify(url: str, token: str) -> dict[str, Any]:
    started = time.perf_counter()
    response = requests.get(f"{url}/api/v1/audit/verify", headers={"Authorization": f"Bearer {token}"},
                            timeout=600)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return {**body, "seconds": round(time.perf_counter() - started, 2)}


def _measure(op: Op, cfg: ScaleConfig, servers: list[RunningServer]) -> Stats:
    return drive(op, threads=cfg.threads, calls_per_thread=cfg.calls_per_thread, time_cap_s=cfg.cap_s,
                 server_cpu=lambda: sum(s.cpu_seconds() for s in servers))


def _warm(ops: dict[str, Op], threads: int) -> None:
    """A few untimed calls of each op from every thread (connections, pools, caches)."""
    for op in ops.values():
        drive(op, threads=threads, calls_per_thread=5, time_cap_s=30)


def run_scale(cfg: ScaleConfig, root: Path, token: str, log: Log) -> ScaleResults:
    """Start PostgreSQL and the servers, seed, measure; everything started is stopped again."""
    results = ScaleResults(cfg)
    pg = start_postgres()
    servers: list[RunningServer] = []
    try:
        results.postgres = _postgres_version(pg)
        log(f"== scale: {results.postgres} on 127.0.0.1:{pg.port}")
        dbs = {size: pg.create_database(f"calabi_scale_{size}") for size in ("small", "large")}
        started: dict[str, RunningServer] = {}
        for size, url in dbs.items():
            server = start_server(CALABI_API_ONLY, root / size, token=token, env_extra={"CALABI_DATABASE_URL": url})
            servers.append(server)
            started[size] = server
            results.commands[size] = f"CALABI_DATABASE_URL=<{size} db> {server.display_command}"
            results.template_s = _template(server, cfg.versions)
            log(f"   {size}: up at {server.url}; template of {cfg.versions} versions registered in "
                f"{results.template_s:.1f}s")
        conninfo = {size: pg.conninfo(url.rsplit("/", 1)[-1]) for size, url in dbs.items()}
        log(f"== scale: seeding {cfg.models - 1} clones of the template (COPY, one transaction)")
        results.seed = seed_clones(conninfo["large"], cfg.models)
        log(f"   {results.seed.versions:,} versions, {results.seed.audit_events:,} audit events in "
            f"{results.seed.sql_s:.1f}s of SQL, artifact trees hard-linked in {results.seed.files_s:.1f}s")
        for size in dbs:
            results.counts[size] = check_invariants(conninfo[size])
            log(f"   {size}: {results.counts[size]} (invariants hold; ANALYZE done)")
        results.audit = _audit_verify(started["large"].url, token)
        log(f"   large: audit verify {results.audit}")
        replica = start_server(CALABI_API_ONLY, root / "large-2", token=token, data_dir=root / "large" / "data",
                               env_extra={"CALABI_DATABASE_URL": dbs["large"]})
        servers.append(replica)
        results.commands["large, second replica"] = (f"CALABI_DATABASE_URL=<large db> {replica.display_command}")
        stages: dict[str, dict[tuple[str, int], str]] = {size: {} for size in dbs}
        _latency(cfg, results, started, token, stages, log)
        _replicas(cfg, results, [started["large"], replica], token, stages["large"], log)
    finally:
        for server in servers:
            stop_server(server)
        stop_postgres(pg)
    return results


def _latency(cfg: ScaleConfig, results: ScaleResults, started: dict[str, RunningServer], token: str,
             stages: dict[str, dict[tuple[str, int], str]], log: Log) -> None:
    apis = {size: _Api([server.url], token) for size, server in started.items()}
    models = {"small": 1, "large": cfg.models}
    ops = {size: _ops(api, models[size], cfg, 1, stages[size]) for size, api in apis.items()}
    for size in apis:
        _warm(ops[size], cfg.threads)
    runs: dict[tuple[str, str], list[Stats]] = {}
    order = list(apis)
    for round_no in range(1, cfg.rounds + 1):
        log(f"== scale: latency round {round_no}/{cfg.rounds}; load {os.getloadavg()[0]:.2f}")
        for name in OPS:
            for size in order:
                stats = _measure(ops[size][name], cfg, [started[size]])
                runs.setdefault((name, size), []).append(stats)
                log(f"   {name:<20} {size:<5} x{cfg.threads}: {_line(stats)}")
            order.reverse()
    results.latency = {key: merge_rounds(r) for key, r in runs.items()}


def _replicas(cfg: ScaleConfig, results: ScaleResults, replicas: list[RunningServer], token: str,
              stages: dict[tuple[str, int], str], log: Log) -> None:
    forms = {1: replicas[:1], 2: replicas}
    apis = {n: _Api([s.url for s in servers], token) for n, servers in forms.items()}
    ops = {n: _ops(api, cfg.models, cfg, 2 + n, stages) for n, api in apis.items()}
    _warm(ops[2], cfg.threads)
    runs: dict[tuple[str, int], list[Stats]] = {}
    order = list(forms)
    for round_no in range(1, cfg.rounds + 1):
        log(f"== scale: one vs two replicas, round {round_no}/{cfg.rounds}; load {os.getloadavg()[0]:.2f}")
        for name in OPS:
            for n in order:
                stats = _measure(ops[n][name], cfg, replicas)
                runs.setdefault((name, n), []).append(stats)
                log(f"   {name:<20} {n} replica(s) x{cfg.threads}: {_line(stats)}")
            order.reverse()
    results.replicas = {key: merge_rounds(r) for key, r in runs.items()}


def _line(stats: Stats) -> str:
    errors = f", {stats.errors} errors ({stats.first_error})" if stats.errors else ""
    return (f"{stats.ops_per_s:7.1f} ops/s  p50 {stats.p50:6.2f} ms  p99 {stats.p99:7.2f} ms  n={stats.n}  "
            f"server {stats.server_cores:.2f} cores{errors}")


def _postgres_version(pg: PostgresServer) -> str:
    with pg.connect() as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0] if row else '?'}"

