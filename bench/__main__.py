"""``python -m bench``: Calabi vs the real MLflow server, its promotion engine vs bare Temporal, and at scale.

Options: ``[--quick] [--engine-only | --scale-only | --no-engine] [--no-scale]``.

Starts Calabi and MLflow (uvicorn and gunicorn forms), builds the same fixtures in each
through ``mlflow.MlflowClient``, runs the 1/8-thread matrix and the 8 threads split over 2
client processes (the 8-thread targets: one client process is GIL-bound), grows one model to 10,000 versions measuring
latency (and throughput) on the way, checks kept-alive connections for the 40 ms
Nagle/delayed-ACK stall, and writes ``bench/RESULTS.md``. See ``bench.run``.

Then the engine part (``bench.engine_run``): 1, 10 and 50 promotions submitted at once to
``calabi serve`` next to the same number of no-op floor workflows on the same Temporal dev
server; it rewrites the Engine section of ``bench/RESULTS.md`` and leaves the rest alone.

Last the scale part (``bench.scale_run``): 1,000 models × 100 versions on PostgreSQL against 1 × 100,
one vs two API replicas; it rewrites the Scale section (below the keep marker) and
``bench/scale-results.json``. Missed targets are reported, never an error exit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict
from pathlib import Path
from types import FrameType

from bench.engine_processes import stop_children
from bench.engine_report import engine_section, old_section, splice
from bench.engine_run import EngineConfig, run_engine
from bench.report import (
    KEEP_MARKER,
    ServerResults,
)
from bench.results_page import command_line, kept_tail, machine_facts, render
from bench.run import FULL, QUICK, nagle_demo, run_benchmark
from bench.scale_report import scale_json, scale_section, splice_scale
from bench.scale_run import FULL as SCALE_FULL
from bench.scale_run import QUICK as SCALE_QUICK
from bench.scale_run import run_scale
from bench.servers import (
    CALABI,
    MLFLOW_ASYNCIO,
    MLFLOW_GUNICORN,
    MLFLOW_UVICORN,
    stop_all,
)
from bench.split import PROCESSES, THREADS_PER_PROCESS

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SCALE_JSON = Path(__file__).resolve().parent / "scale-results.json"
SPECS = {s.key: s for s in (CALABI, MLFLOW_UVICORN, MLFLOW_GUNICORN)}


def log(message: str) -> None:
    """Progress on stdout, flushed (the run takes minutes)."""
    print(message, flush=True)


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
    part = parser.add_mutually_exclusive_group()
    part.add_argument("--engine-only", action="store_true", help="run only the promotion-engine benchmark")
    part.add_argument("--no-engine", action="store_true", help="skip the promotion-engine benchmark")
    part.add_argument("--scale-only", action="store_true", help="run only the scale benchmark (PostgreSQL)")
    parser.add_argument("--no-scale", action="store_true", help="skip the scale benchmark")
    parser.add_argument("--scale-json", type=Path, default=SCALE_JSON,
                        help="the scale part's raw numbers (default bench/scale-results.json)")
    parser.add_argument("--engine-rounds", default="1,10,50", help="promotions submitted at once, per round")
    parser.add_argument("--engine-poll-ms", type=float, default=100, help="read-model polling interval")
    return parser.parse_args(argv)


def _engine(args: argparse.Namespace, root: Path, command: str) -> str | None:
    """Run the engine part; its RESULTS.md section (None when it could not run)."""
    rounds = tuple(sorted({int(n) for n in args.engine_rounds.split(",") if n.strip()}))
    cfg = EngineConfig(rounds=rounds, poll_s=args.engine_poll_ms / 1000)
    log(f"== engine: {', '.join(map(str, rounds))} promotions at once vs the floor; load {os.getloadavg()[0]:.2f}")
    load_before, wall = os.getloadavg()[0], time.perf_counter()
    try:
        results = run_engine(cfg, root / "engine", log)
    except Exception:  # the registry part's results are still written; the old Engine section is kept
        log("!! the engine benchmark could not run:\n" + traceback.format_exc())
        return None
    finally:
        stop_children()
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return engine_section(results, command=command, date=date, load=(load_before, os.getloadavg()[0]),
                          wall_s=time.perf_counter() - wall)


def _scale(args: argparse.Namespace, command: str, token: str) -> int:
    """Run the scale part and write its section and JSON; the exit code (1: it could not run)."""
    cfg = SCALE_QUICK if args.quick else SCALE_FULL
    root = Path(tempfile.mkdtemp(prefix="calabi-bench-"))
    load_before, wall = os.getloadavg()[0], time.perf_counter()
    try:
        results = run_scale(cfg, root, token, log)
    except Exception:
        log("!! the scale benchmark could not run:\n" + traceback.format_exc())
        return 1
    finally:
        stop_all()
        if args.keep_dirs:
            log(f"server directories kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = scale_section(results, command=command, date=date, machine=machine_facts(),
                            load=(load_before, os.getloadavg()[0]), wall_s=time.perf_counter() - wall)
    log("\n" + section)
    if not args.no_write:
        page = args.results.read_text() if args.results.exists() else ""
        args.results.write_text(splice_scale(page, section))
        args.scale_json.write_text(json.dumps({"command": command, "date": date, "machine": machine_facts(),
                                               "scale": scale_json(results)}, indent=2) + "\n")
        log(f"Scale section written to {args.results}, raw numbers to {args.scale_json}")
    if args.json is not None:  # next to the registry part's numbers when it wrote them
        raw = json.loads(args.json.read_text()) if args.json.exists() and not args.scale_only else {}
        args.json.write_text(json.dumps({**raw, "scale": scale_json(results)}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C stops the run even if started ignoring it
    token = "bench-" + os.urandom(16).hex()
    os.environ["MLFLOW_TRACKING_TOKEN"] = token
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "60"
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    code = 0 if args.scale_only else _registry_and_engine(args, argv, token)
    if code in (0, 1) and not (args.no_scale or args.engine_only):
        try:
            code = max(code, _scale(args, command_line(argv), token))
        except KeyboardInterrupt:
            log("interrupted")
            return 130
    return code


def _registry_and_engine(args: argparse.Namespace, argv: list[str], token: str) -> int:
    """The registry part and the engine part; the exit code."""
    cfg = QUICK if args.quick else FULL
    keys = [k.strip() for k in args.servers.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SPECS]
    if unknown:
        log(f"unknown server(s): {', '.join(unknown)}")
        return 2

    command = command_line(argv)
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = machine_facts()
    log(f"bench ({cfg.mode}): {command}\nmachine: nproc={machine['nproc']}, {machine['cpu']}")
    root = Path(tempfile.mkdtemp(prefix="calabi-bench-"))
    load_before = os.getloadavg()[0]
    wall = time.perf_counter()
    results: dict[str, ServerResults] = {}
    engine: str | None = None
    try:
        if not args.engine_only:
            specs = [SPECS[k] for k in keys]
            results.update(
                run_benchmark(
                    specs, cfg, root, token=token, calabi_workers=args.calabi_workers, grow_each=args.grow_each,
                    log=log,
                )
            )
            if not args.no_nagle_demo:
                results[MLFLOW_ASYNCIO.key] = nagle_demo(root, token, log)
        wall_s = time.perf_counter() - wall
        load_after = os.getloadavg()[0]
        if not args.no_engine:
            engine = _engine(args, root, command)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        stop_all()
        stop_children()
        if args.keep_dirs:
            log(f"server directories kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    engine_failed = engine is None and not args.no_engine
    if engine is not None:
        log("\n" + engine)
    if args.engine_only:
        _write_engine_only(args.results, None if args.no_write else engine)
        return 1 if engine_failed else 0
    if args.json is not None:
        _write_json(args.json, command, date, machine, results)
    text = render(
        command=command,
        date=date,
        cfg=cfg,
        machine=machine,
        calabi_workers=args.calabi_workers,
        results=results,
        wall_s=wall_s,
        load_before=load_before,
        load_after=load_after,
    )
    log("\n" + text)
    if "calabi" not in results:
        log("Calabi was not benchmarked: its registry results in RESULTS.md left alone")
        _write_engine_only(args.results, None if args.no_write else engine)
    elif not args.no_write:
        tail = kept_tail(args.results)
        page = text + "\n" + KEEP_MARKER + "\n\n" + tail
        args.results.write_text(splice(page, engine if engine is not None else old_section(args.results)))
        log(f"written to {args.results}")
    return 1 if engine_failed else 0


def _write_engine_only(path: Path, engine: str | None) -> None:
    """Replace only the Engine section of the results page (nothing when ``engine`` is None)."""
    if engine is not None:
        path.write_text(splice(path.read_text() if path.exists() else "", engine))
        log(f"Engine section written to {path}")


def _write_json(path: Path, command: str, date: str, machine: dict[str, str], results: dict[str, ServerResults]
                ) -> None:
    """The registry part's raw numbers."""
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
    path.write_text(json.dumps({"command": command, "date": date, "machine": machine, "results": raw}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
