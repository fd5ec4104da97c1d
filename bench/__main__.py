"""``python -m bench [--quick]``: Calabi against the real MLflow server, same MLflow client.

Starts Calabi and MLflow (uvicorn and gunicorn forms), builds the same fixtures in each
through ``mlflow.MlflowClient``, runs the 1/8-thread matrix and the 8 threads split over 2
client processes (the 8-thread targets: one client process is GIL-bound), grows one model to 10,000 versions measuring
latency (and throughput) on the way, checks kept-alive connections for the 40 ms
Nagle/delayed-ACK stall, and writes ``bench/RESULTS.md``. See ``bench.run``.
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
import sys
import tempfile
import time
import warnings
from dataclasses import asdict
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
    saturation_table,
    split_table,
    targets_table,
    throughput_table,
)
from bench.run import FULL, MATRIX_OPS, QUICK, SCALE_OPS, Config, nagle_demo, run_benchmark
from bench.servers import (
    CALABI,
    MLFLOW_ASYNCIO,
    MLFLOW_GUNICORN,
    MLFLOW_UVICORN,
    stop_all,
)
from bench.split import PROCESSES, SPLIT_OPS, THREADS_PER_PROCESS

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SPECS = {s.key: s for s in (CALABI, MLFLOW_UVICORN, MLFLOW_GUNICORN)}


def log(message: str) -> None:
    """Progress on stdout, flushed (the run takes minutes)."""
    print(message, flush=True)


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
    clients = PROCESSES * THREADS_PER_PROCESS
    layout = f"{PROCESSES} processes × {THREADS_PER_PROCESS} threads"
    matrix, found = matrix_table(calabi, mlflows, MATRIX_OPS, cfg.threads, checked=(1,))
    checks += found
    split, found = split_table(calabi, mlflows, SPLIT_OPS, clients, layout)
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
            *[(f"{o} {PROCESSES}x{THREADS_PER_PROCESS}", v) for o, v in r.split.items()],
        ]
        if s.errors
    ]
    capped = [
        f"{r.label} {o} @{n:,} (n={s.n})" for r in results.values() for (o, n), s in r.scale_latency.items() if s.capped
    ]
    split_errors = sorted({r.split_error for r in results.values() if r.split_error})
    errors += [f"- The {PROCESSES}-process measurement stopped early: `{e}`" for e in split_errors]
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
        "huey consumers are not part of the registry; off, they take no CPU from it). All servers stay up for the "
        "whole run, but only the one being measured gets requests: every row is measured on each server in turn, "
        "seconds apart and in a rotating order, so load from elsewhere on the machine falls on all of them alike.",
        "",
        "## Method",
        "",
        "- One `mlflow.MlflowClient(tracking_uri=...)` per server, registry calls only, the same client code for "
        "every server (`MLFLOW_TRACKING_TOKEN` is set for Calabi; MLflow ignores the header). "
        "`MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`, so a failure is counted, never hidden by client retries.",
        "- MLflow 3's client sends two requests for `get_latest_versions` and for "
        "`transition_model_version_stage` (first `GET registered-models/get`, its prompt check), one for the "
        "others; the rows measure what a client user waits for, so those two rows include both round trips.",
        "- `create_model_version(..., await_creation_for=0)`. **Asymmetry**: Calabi's source is a tiny local "
        "model directory (`MLmodel` + a 256-byte file) under `CALABI_LOCAL_SOURCE_ROOTS`, which Calabi copies "
        "into its own store and digests on every creation; MLflow's source is `s3://bench-bucket/model`, a "
        "string MLflow stores without reading (MLflow refuses local paths without a matching run).",
        f"- 1/8-thread matrix: thread *t* works on its own model `main-t` ({20} versions, alias `bench`, one "
        "version each in Staging, Production, Archived); creates go to `create-t`; transitions move versions "
        "11–20 into Production with `archive_existing_versions=True` (Calabi always archives the incumbent). "
        f"Per run: {cfg.calls_single} calls at 1 thread, {cfg.calls_per_thread} calls per thread at 8 threads, "
        f"capped at {cfg.cap_s:g}s; threads start on a barrier; ops/s = successful calls ÷ wall time. "
        + (
            f"The whole matrix runs {cfg.rounds} times, interleaved; a row's ops/s is the median of its "
            f"{cfg.rounds} rounds, its p50/p99 are over all {cfg.rounds} rounds' calls."
            if cfg.rounds > 1
            else ""
        ),
        "- Large models: one per size ("
        + ", ".join(f"`scale-{s}`" for s in cfg.scales)
        + f"), grown through the client with {cfg.populate_threads} threads (alias `bench` → 50 and one version "
        f"each in Archived, Staging, Production, set at 100 versions). Throughput of transitions and "
        f"get-latest-versions ({cfg.throughput_threads} threads × {cfg.throughput_calls_per_thread} calls) is "
        f"measured when the largest model has {cfg.throughput_at:,} versions; then it grows to its full size. "
        f"Latency (1 thread, {cfg.scale_calls} calls per size and server, capped at {cfg.scale_cap_s:g}s) of "
        "get-by-alias, get-latest-versions (all stages) and a transition of one of the model's newest 64 "
        "versions into Production (archiving the incumbent) is measured with every size present, in "
        f"{cfg.rounds} interleaved round(s) over sizes × operations × servers, so load drift on the machine "
        "hits every size alike (the p99 ratio compares like with like).",
        *[
            f"- {r.label} does not grow the large models itself: it is restarted on copies of "
            f"{r.large_model_from}'s database taken at the throughput point and at full size (same schema and "
            "rows; minutes saved)."
            for r in results.values()
            if r.large_model_from
        ],
        "- p50/p99 are nearest-rank over the successful calls' latencies as the client sees them (client "
        "overhead included, identical for every server); with n < 100 the p99 is the maximum.",
        "- Ratio = Calabi ops/s ÷ the faster MLflow form's ops/s for that row.",
        f"- {clients} client threads: one Python process running {clients} MLflow client threads is held to one "
        "core by its GIL, and the client spends about as much CPU per call as Calabi's server, so against a fast "
        f"server such a process measures the client more than the server (its CPU table below shows it near 1.0 "
        f"core). The {clients}-thread targets are therefore measured with the same {clients} client threads (same "
        f"models and calls) in {PROCESSES} spawned processes of {THREADS_PER_PROCESS} threads, each with its own "
        "`MlflowClient`, under the matrix's rules: one barrier across both processes, the same calls per thread "
        "and time cap, rotating server order, interleaved with the matrix rounds, median of the rounds. Every "
        f"server is driven the same way. The {clients}-thread rows of the 1-process matrix are still run and "
        "shown, with their ratio, as a diagnostic. The CPU table gives the client's CPU (all client processes) "
        "and the server's (its process group, user+system from /proc before and after) per successful call and "
        "as cores (CPU ÷ wall time): one client process near 1.0 core is GIL-bound, and client plus server near "
        f"the machine's {machine['nproc']} cores means the shared machine is the limit.",
        "",
        f"## Targets: {met} of {evaluated} met",
        "",
        *(
            [
                "Quick mode: fewer calls and a smaller large model than the targets are defined at "
                "(5,000 and 10,000 versions); run without `--quick` for the verdict.",
                "",
            ]
            if cfg.mode == "quick"
            else []
        ),
        *targets_table(checks),
        "",
        f"## {clients} client threads in {PROCESSES} processes ({THREADS_PER_PROCESS} threads each)",
        "",
        f"The {clients}-thread targets (see Method); the last column is the same ratio with all {clients} threads in "
        "one client process (the matrix below).",
        "",
        *split,
        "",
        f"## 1 client thread, and {clients} threads in 1 process",
        "",
        f"Targets on the 1-thread rows; the {clients}-thread rows here run in one GIL-bound client process and are "
        "shown for comparison.",
        "",
        *matrix,
        "",
        f"Which side was saturated at {clients} client threads: CPU per successful call and cores kept busy (CPU ÷ "
        "wall time, pooled over the rounds; ops/s is the rounds' median, as above). Client cores add up the client "
        "processes, each of which can use at most 1.0 (its GIL); client plus server cores near "
        f"nproc={machine['nproc']} means the machine they share is the limit.",
        "",
        *saturation_table([calabi, *mlflows], SPLIT_OPS, clients, layout),
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
        "waits for the client's delayed ACK (~40 ms) before the body is sent. uvicorn writes headers and body "
        "separately. On uvloop (installed here with `uvicorn[standard]`, and uvicorn's default loop when present) "
        "every accepted TCP socket gets TCP_NODELAY. On the plain asyncio loop only sockets whose `proto` is "
        "IPPROTO_TCP do, and the listening socket uvicorn binds itself for `--workers N > 1` is "
        "`socket.socket(family)` (proto 0), so its connections keep Nagle: that is the stall of MLflow's "
        'multi-worker form where uvloop is missing (last row, forced with `--uvicorn-opts "--loop asyncio"`).',
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
        specs = [SPECS[k] for k in keys]
        results.update(
            run_benchmark(
                specs, cfg, root, token=token, calabi_workers=args.calabi_workers, grow_each=args.grow_each, log=log
            )
        )
        if not args.no_nagle_demo:
            results[MLFLOW_ASYNCIO.key] = nagle_demo(root, token, log)
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
                f"split_{PROCESSES}x{THREADS_PER_PROCESS}": {o: s.as_dict() for o, s in r.split.items()},
                "split_error": r.split_error or None,
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
