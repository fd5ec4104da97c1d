"""bench/RESULTS.md: the machine, the command line, the tables and the hand notes kept from the last page."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path

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
from bench.run import MATRIX_OPS, SCALE_OPS, Config
from bench.split import PROCESSES, SPLIT_OPS, THREADS_PER_PROCESS

__all__ = ["command_line", "kept_tail", "machine_facts", "render"]


def machine_facts() -> dict[str, str]:
    """CPU, memory, OS, Python and the measured packages' versions, for the results page."""
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


def command_line(argv: list[str]) -> str:
    """The command that reproduces this run, as shown on the results page."""
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


def kept_tail(path: Path) -> str:
    """The hand-written notes below the keep marker of an existing results page."""
    if not path.exists():
        return ""
    text = path.read_text()
    index = text.find(KEEP_MARKER)
    return text[index + len(KEEP_MARKER) :].lstrip("\n") if index >= 0 else ""
