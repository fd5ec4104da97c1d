"""``python -m bench [--quick]``: Calabi against the real MLflow server, same MLflow client.

Starts each server in turn (never two at once, so they do not share the CPU), builds the
same fixtures through ``mlflow.MlflowClient``, runs the 1/8-thread matrix, grows one model
to 10,000 versions measuring latency (and throughput) on the way, checks kept-alive
connections for the 40 ms Nagle/delayed-ACK stall, and writes ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shlex
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import warnings
from contextlib import closing
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from types import FrameType

from bench.report import (
    KEEP_MARKER,
    ServerResults,
    TargetCheck,
    cpu_table,
    flatness_table,
    matrix_table,
    nagle_table,
    populate_table,
    targets_table,
    throughput_table,
)
from bench.servers import (
    CALABI,
    MLFLOW_ASYNCIO,
    MLFLOW_GUNICORN,
    MLFLOW_UVICORN,
    ServerSpec,
    start_server,
    stop_all,
    stop_server,
)
from bench.workload import Registry, Stats, drive, nagle_check

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
MATRIX_OPS = ["create version", "get version", "get by alias", "get-latest-versions", "transition", "search"]
SCALE_OPS = ["get by alias", "get-latest-versions", "transition"]
THROUGHPUT_OPS = ["transition", "get-latest-versions"]
SPECS = {s.key: s for s in (CALABI, MLFLOW_UVICORN, MLFLOW_GUNICORN)}


@dataclass(frozen=True)
class Config:
    """How much to run; ``--quick`` shrinks counts, never the shape of the run."""

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

    @property
    def sizes(self) -> list[int]:
        """Every size the large model is grown to, ascending."""
        return sorted({*self.scales, self.throughput_at})


FULL = Config("full", (1, 8), 200, 40, 15, (100, 1_000, 10_000), 100, 20, 5_000, 8, 25, 8, 420)
QUICK = Config("quick", (1, 8), 40, 10, 8, (100, 500, 1_000), 30, 8, 1_000, 8, 8, 8, 120)


def log(message: str) -> None:
    """Progress on stdout, flushed (the run takes minutes)."""
    print(message, flush=True)


def _summary(stats: Stats) -> str:
    errors = f", {stats.errors} errors ({stats.first_error})" if stats.errors else ""
    capped = ", time-capped" if stats.capped else ""
    return (
        f"{stats.ops_per_s:8.1f} ops/s  p50 {stats.p50:7.2f} ms  p99 {stats.p99:7.2f} ms  n={stats.n}  "
        f"CPU/call: server {stats.server_cpu_ms_per_call:.2f} ms, client {stats.client_cpu_ms_per_call:.2f} ms "
        f"({stats.client_cores:.2f} cores){capped}{errors}"
    )


def _warm_up(reg: Registry, threads: int) -> None:
    """A few unrecorded calls of every read from every thread, so each server worker is warm."""
    ops = reg.matrix_ops()
    for name in ("get version", "get by alias", "get-latest-versions", "search"):
        drive(ops[name], threads=threads, calls_per_thread=5, time_cap_s=30)


def _snapshot(db: Path, dest: Path) -> None:
    """A consistent copy of a live SQLite database (the backup API, safe with WAL and a running server)."""
    dest.unlink(missing_ok=True)
    with closing(sqlite3.connect(db)) as src, closing(sqlite3.connect(dest)) as out:
        src.backup(out)


def _restore(snapshot: Path, db: Path) -> None:
    """Put a snapshot in place of a stopped server's database."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(snapshot, db)


def bench_server(
    spec: ServerSpec,
    cfg: Config,
    root: Path,
    token: str,
    calabi_workers: int,
    *,
    snapshots: dict[int, Path] | None = None,
    reuse: dict[int, Path] | None = None,
) -> ServerResults:
    """Start one server, run everything against it, stop it.

    ``snapshots``: save the MLflow database after each growth step of the large model (into this
    dict). ``reuse``: instead of growing the large model through the client, restart the server
    on those saved databases (the other MLflow form, same schema; this saves minutes).
    """
    from mlflow import MlflowClient

    log(f"\n== {spec.label}: starting")
    workdir = root / spec.key
    server = start_server(spec, workdir, token=token, calabi_workers=calabi_workers)
    results = ServerResults(spec.key, spec.label, server.display_command, startup_s=server.started_s)
    try:
        log(f"   up in {server.started_s:.1f}s at {server.url}; load average {os.getloadavg()[0]:.2f}")
        reg = Registry(MlflowClient(tracking_uri=server.url), server.source, threads=max(cfg.threads))
        started = time.perf_counter()
        reg.setup_matrix()
        reg.setup_scale()
        log(f"   fixtures in {time.perf_counter() - started:.1f}s")
        _warm_up(reg, max(cfg.threads))
        results.nagle = nagle_check(server.url, token)
        log(
            f"   keep-alive check: kept-alive p50 {results.nagle.keepalive.p50:.2f} ms, fresh p50 "
            f"{results.nagle.fresh.p50:.2f} ms: {results.nagle.verdict()}"
        )
        ops = reg.matrix_ops()
        for threads in cfg.threads:
            calls = cfg.calls_single if threads == 1 else cfg.calls_per_thread
            for name in MATRIX_OPS:
                stats = drive(
                    ops[name],
                    threads=threads,
                    calls_per_thread=calls,
                    time_cap_s=cfg.cap_s,
                    server_cpu=server.cpu_seconds,
                )
                results.matrix[(name, threads)] = stats
                log(f"   {name:<20} x{threads}  {_summary(stats)}")
        for index, size in enumerate(cfg.sizes):
            if reuse is not None:
                stop_server(server)
                _restore(reuse[size], workdir / "mlflow.db")
                server = start_server(spec, workdir, token=token)
                reg.client = MlflowClient(tracking_uri=server.url)
                reg.scale_versions = size
                for warm in reg.scale_ops().values():  # fresh workers: first calls import and connect
                    drive(warm, threads=max(cfg.threads), calls_per_thread=2, time_cap_s=30)
                log(f"   restarted on the {size:,}-version database in {server.started_s:.1f}s")
            else:
                populated = reg.populate_scale(size, threads=cfg.populate_threads, time_cap_s=cfg.populate_cap_s)
                results.populate.append(populated)
                log(
                    f"   populate {populated.from_versions} -> {populated.to_versions}: {populated.elapsed_s:.1f}s "
                    f"({populated.per_s:.0f}/s, {populated.errors} retried errors)"
                )
                if populated.to_versions < size:
                    log(f"   !! only {populated.to_versions} of {size} versions: {populated.first_error}")
                if index == 0:
                    reg.decorate_scale()
                if snapshots is not None:
                    snapshots[size] = root / f"{spec.key}-{size}.db"
                    _snapshot(workdir / "mlflow.db", snapshots[size])
            scale_ops = reg.scale_ops()
            if size in cfg.scales:
                for name in SCALE_OPS:
                    stats = drive(
                        scale_ops[name],
                        threads=1,
                        calls_per_thread=cfg.scale_calls,
                        time_cap_s=cfg.scale_cap_s,
                        server_cpu=server.cpu_seconds,
                    )
                    results.scale_latency[(name, size)] = stats
                    log(f"   {name:<20} @{size:<6} {_summary(stats)}")
            if size == cfg.throughput_at:
                results.throughput_versions = reg.scale_versions
                for name in THROUGHPUT_OPS:
                    stats = drive(
                        scale_ops[name],
                        threads=cfg.throughput_threads,
                        calls_per_thread=cfg.throughput_calls_per_thread,
                        time_cap_s=cfg.cap_s,
                        server_cpu=server.cpu_seconds,
                    )
                    results.scale_throughput[name] = stats
                    log(f"   {name:<20} @{size:<6} x{cfg.throughput_threads}  {_summary(stats)}")
    finally:
        stop_server(server)
        log(f"   {spec.label} stopped")
    return results


def nagle_demo(root: Path, token: str) -> ServerResults:
    """MLflow's default form on the plain asyncio loop: only the keep-alive check."""
    from mlflow import MlflowClient

    spec = MLFLOW_ASYNCIO
    log(f"\n== {spec.label}: starting (keep-alive check only)")
    server = start_server(spec, root / spec.key, token=token)
    results = ServerResults(spec.key, spec.label, server.display_command, startup_s=server.started_s)
    try:
        client = MlflowClient(tracking_uri=server.url)
        client.create_registered_model("main-0")
        client.create_model_version("main-0", server.source, await_creation_for=0)
        drive(lambda _t, _i: client.get_model_version("main-0", "1"), threads=4, calls_per_thread=5, time_cap_s=30)
        results.nagle = nagle_check(server.url, token)
        log(
            f"   keep-alive check: kept-alive p50 {results.nagle.keepalive.p50:.2f} ms, fresh p50 "
            f"{results.nagle.fresh.p50:.2f} ms: {results.nagle.verdict()}"
        )
    finally:
        stop_server(server)
    return results


def _machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 1024 / 1024:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "absent"

    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": ", ".join(
            f"{p} {version(p)}"
            for p in ("mlflow", "uvicorn", "uvloop", "gunicorn", "fastapi", "sqlalchemy", "requests")
        ),
    }


def _command_line(argv: list[str]) -> str:
    python = Path(sys.executable)
    try:
        shown = str(python.relative_to(Path.cwd()))
    except ValueError:
        shown = str(python)
    return " ".join([shown, "-m", "bench", *map(shlex.quote, argv)])


def render(
    *,
    command: str,
    date: str,
    cfg: Config,
    machine: dict[str, str],
    calabi_workers: int,
    results: dict[str, ServerResults],
    wall_s: float,
    load_before: float,
    load_after: float,
) -> str:
    """The whole RESULTS.md (without the kept tail)."""
    calabi = results.get("calabi") or ServerResults("calabi", "Calabi (not run)", "")
    mlflows = [results[k] for k in ("mlflow-uvicorn", "mlflow-gunicorn") if k in results]
    checks: list[TargetCheck] = []
    matrix, found = matrix_table(calabi, mlflows, MATRIX_OPS, cfg.threads)
    checks += found
    throughput, found = throughput_table(calabi, mlflows)
    checks += found
    flatness, found = flatness_table(calabi, mlflows, SCALE_OPS, cfg.scales)
    checks += found
    nagle, found = nagle_table(list(results.values()))
    checks += found
    met = sum(1 for c in checks if c.met)
    evaluated = sum(1 for c in checks if c.met is not None)
    errors = [
        f"- {r.label}, {what}: {s.errors} failed calls; first: `{s.first_error}`"
        for r in results.values()
        for what, s in [
            *[(f"{o} x{n}", v) for (o, n), v in r.matrix.items()],
            *[(f"{o} @{n}", v) for (o, n), v in r.scale_latency.items()],
            *[(f"{o} @{r.throughput_versions} x{v.threads}", v) for o, v in r.scale_throughput.items()],
        ]
        if s.errors
    ]
    capped = [
        f"{r.label} {o} @{n:,} (n={s.n})" for r in results.values() for (o, n), s in r.scale_latency.items() if s.capped
    ]
    servers = "\n".join(f"- **{r.label}**: `{r.command}` (ready in {r.startup_s:.1f}s)" for r in results.values())
    out = [
        "# Calabi vs MLflow: model-registry benchmark",
        "",
        f"- Command: `{command}` ({cfg.mode} mode; `make bench` runs `.venv/bin/python -m bench`)",
        f"- Date: {date}; whole run {wall_s / 60:.1f} min",
        f"- Machine: nproc={machine['nproc']}, {machine['cpu']}, {machine['memory']}; {machine['os']}",
        f"- Python {machine['python']}; {machine['packages']}",
        f"- Load average (1 min) at start {load_before:.2f}, at end {load_after:.2f}. Client and server share "
        "the machine; numbers from a busy machine are noisy, p99 most of all.",
        "",
        "## Servers",
        "",
        servers,
        "",
        f"Calabi runs with `--workers {calabi_workers}`; both MLflow forms with MLflow's default 4 workers, SQLite "
        "backend and local artifact root, and `MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false` (the job runner and its "
        "huey consumers are not part of the registry; off, they take no CPU from it). One server runs at a time.",
        "",
        "## Method",
        "",
        "- One `mlflow.MlflowClient(tracking_uri=...)` per server, registry calls only, the same client code for "
        "every server (`MLFLOW_TRACKING_TOKEN` is set for Calabi; MLflow ignores the header). "
        "`MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`, so a failure is counted, never hidden by client retries.",
        "- `create_model_version(..., await_creation_for=0)`. **Asymmetry**: Calabi's source is a tiny local "
        "model directory (`MLmodel` + a 256-byte file) under `CALABI_LOCAL_SOURCE_ROOTS`, which Calabi copies "
        "into its own store and digests on every creation; MLflow's source is `s3://bench-bucket/model`, a "
        "string MLflow stores without reading (MLflow refuses local paths without a matching run).",
        f"- 1/8-thread matrix: thread *t* works on its own model `main-t` ({20} versions, alias `bench`, one "
        "version each in Staging, Production, Archived); creates go to `create-t`; transitions move versions "
        "11–20 into Production with `archive_existing_versions=True` (Calabi always archives the incumbent). "
        f"Per run: {cfg.calls_single} calls at 1 thread, {cfg.calls_per_thread} calls per thread at 8 threads, "
        f"capped at {cfg.cap_s:g}s; threads start on a barrier; ops/s = successful calls ÷ wall time.",
        f"- Large model `scale`: grown through the client with {cfg.populate_threads} threads to "
        + ", ".join(f"{s:,}" for s in cfg.sizes)
        + f" versions. At {', '.join(f'{s:,}' for s in cfg.scales)}: {cfg.scale_calls} single-thread calls each "
        f"(capped at {cfg.scale_cap_s:g}s) of get-by-alias, get-latest-versions (all stages) and a transition "
        f"of one of the newest 64 versions into Production (archiving the incumbent). At {cfg.throughput_at:,}: "
        f"throughput with {cfg.throughput_threads} threads × {cfg.throughput_calls_per_thread} calls.",
        *[
            f"- {r.label} measures the large model on copies of {r.large_model_from}'s database taken right after "
            "each growth step (restarting the server on each copy), instead of growing it again through the "
            "client: same schema and rows, minutes saved."
            for r in results.values()
            if r.large_model_from
        ],
        "- p50/p99 are nearest-rank over the successful calls' latencies as the client sees them (client "
        "overhead included, identical for every server); with n < 100 the p99 is the maximum.",
        "- Ratio = Calabi ops/s ÷ the faster MLflow form's ops/s for that row.",
        "",
        f"## Targets: {met} of {evaluated} met",
        "",
        *targets_table(checks),
        "",
        "## 1 and 8 client threads",
        "",
        *matrix,
        "",
        f"## Large model: throughput at {calabi.throughput_versions:,} versions",
        "",
        *throughput,
        "",
        "## Large model: single-thread latency by size",
        "",
        *flatness,
        "",
        "## Growing the large model (client creates, several threads)",
        "",
        *populate_table([calabi, *mlflows]),
        "",
        "## CPU per call",
        "",
        "Server: user+system CPU of all the server's processes (from /proc, 10 ms ticks) ÷ successful calls. "
        "Client: CPU of the bench process (the MLflow client threads) ÷ successful calls; at 8 threads the "
        "GIL-bound client can use at most one of the machine's cores.",
        "",
        *cpu_table([calabi, *mlflows], MATRIX_OPS, cfg.threads),
        "",
        "## Kept-alive connections (Nagle / delayed-ACK stall)",
        "",
        "One `GET model-versions/get`, 60 times on one kept-alive `requests.Session`, then 60 times on fresh "
        "connections. A response whose headers and body leave in two writes on a socket without TCP_NODELAY "
        "waits for the client's delayed ACK (~40 ms) before the body is sent.",
        "",
        *nagle,
        "",
    ]
    if errors or capped:
        out += ["## Failed calls and capped runs", ""]
        out += errors
        if capped:
            out.append("- Stopped by the time cap before the call count: " + "; ".join(capped))
        out.append("")
    return "\n".join(out)


def _kept_tail(path: Path) -> str:
    if not path.exists():
        return ""
    text = path.read_text()
    index = text.find(KEEP_MARKER)
    return text[index + len(KEEP_MARKER) :].lstrip("\n") if index >= 0 else ""


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls per measurement (smoke run)")
    parser.add_argument("--servers", default=",".join(SPECS), help=f"comma-separated subset of {','.join(SPECS)}")
    parser.add_argument("--calabi-workers", type=int, default=1, help="calabi serve --workers (default 1)")
    parser.add_argument(
        "--no-nagle-demo", action="store_true", help="skip the keep-alive check of MLflow on the plain asyncio loop"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="markdown output (default bench/RESULTS.md)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--json", type=Path, default=None, help="also write raw numbers as JSON here")
    parser.add_argument(
        "--grow-each",
        action="store_true",
        help="grow the large model through the client for both MLflow forms (default: the second form "
        "restarts on copies of the first form's database at each size)",
    )
    parser.add_argument("--keep-dirs", action="store_true", help="keep the servers' temporary directories")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    cfg = QUICK if args.quick else FULL
    keys = [k.strip() for k in args.servers.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SPECS]
    if unknown:
        log(f"unknown server(s): {', '.join(unknown)}")
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    token = "bench-" + os.urandom(16).hex()
    os.environ["MLFLOW_TRACKING_TOKEN"] = token
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "60"
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.getLogger("mlflow").setLevel(logging.WARNING)

    command = _command_line(argv)
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = _machine()
    log(f"bench ({cfg.mode}): {command}\nmachine: nproc={machine['nproc']}, {machine['cpu']}")
    root = Path(tempfile.mkdtemp(prefix="calabi-bench-"))
    load_before = os.getloadavg()[0]
    wall = time.perf_counter()
    results: dict[str, ServerResults] = {}
    try:
        snapshots: dict[int, Path] | None = None
        for key in keys:
            spec = SPECS[key]
            if spec.kind == "mlflow" and snapshots is None:
                snapshots = {} if not args.grow_each else None
                results[key] = bench_server(spec, cfg, root, token, args.calabi_workers, snapshots=snapshots)
            elif spec.kind == "mlflow" and snapshots:
                results[key] = bench_server(spec, cfg, root, token, args.calabi_workers, reuse=snapshots)
                results[key].large_model_from = next(r.label for r in results.values() if r.populate)
            else:
                results[key] = bench_server(spec, cfg, root, token, args.calabi_workers)
        if not args.no_nagle_demo:
            results[MLFLOW_ASYNCIO.key] = nagle_demo(root, token)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        stop_all()
        if args.keep_dirs:
            log(f"server directories kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    wall_s = time.perf_counter() - wall
    if args.json is not None:
        raw = {
            key: {
                "label": r.label,
                "command": r.command,
                "startup_s": r.startup_s,
                "matrix": {f"{o} x{n}": s.as_dict() for (o, n), s in r.matrix.items()},
                "scale_latency": {f"{o} @{n}": s.as_dict() for (o, n), s in r.scale_latency.items()},
                "scale_throughput": {o: s.as_dict() for o, s in r.scale_throughput.items()},
                "throughput_versions": r.throughput_versions,
                "populate": [asdict(p) for p in r.populate],
                "nagle": None
                if r.nagle is None
                else {
                    "keepalive": r.nagle.keepalive.as_dict(),
                    "fresh": r.nagle.fresh.as_dict(),
                    "verdict": r.nagle.verdict(),
                },
            }
            for key, r in results.items()
        }
        args.json.write_text(
            json.dumps({"command": command, "date": date, "machine": machine, "results": raw}, indent=2)
        )
    text = render(
        command=command,
        date=date,
        cfg=cfg,
        machine=machine,
        calabi_workers=args.calabi_workers,
        results=results,
        wall_s=wall_s,
        load_before=load_before,
        load_after=os.getloadavg()[0],
    )
    log("\n" + text)
    if "calabi" not in results:
        log("Calabi was not benchmarked: RESULTS.md left alone")
    elif not args.no_write:
        tail = _kept_tail(args.results)
        args.results.write_text(text + "\n" + KEEP_MARKER + "\n\n" + tail)
        log(f"written to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
