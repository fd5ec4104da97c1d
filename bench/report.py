"""Markdown tables and the target checks for ``bench/RESULTS.md``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.stats import Stats
from bench.workload import NagleResult, PopulateResult

__all__ = [
    "KEEP_MARKER",
    "ServerResults",
    "TargetCheck",
    "cpu_table",
    "flatness_table",
    "matrix_table",
    "nagle_table",
    "populate_table",
    "saturation_table",
    "split_table",
    "targets_table",
    "throughput_table",
]

KEEP_MARKER = "<!-- Everything below this line is kept when `python -m bench` rewrites this file. -->"
READ_AND_CREATE_TARGET = 2.0
AT_SCALE_TARGET = 5.0
FLATNESS_TARGET = 1.5
TARGET_BY_OP = {
    "get version": READ_AND_CREATE_TARGET,
    "get by alias": READ_AND_CREATE_TARGET,
    "get-latest-versions": READ_AND_CREATE_TARGET,
    "search": READ_AND_CREATE_TARGET,
    "create version": READ_AND_CREATE_TARGET,
}


@dataclass
class ServerResults:
    """Everything measured against one server."""

    key: str
    label: str
    command: str
    startup_s: float = math.nan
    matrix: dict[tuple[str, int], Stats] = field(default_factory=dict)
    scale_latency: dict[tuple[str, int], Stats] = field(default_factory=dict)
    scale_throughput: dict[str, Stats] = field(default_factory=dict)
    throughput_versions: int = 0
    populate: list[PopulateResult] = field(default_factory=list)
    nagle: NagleResult | None = None
    large_model_from: str = ""
    """Non-empty when the large model was not grown here but restored from this server's databases."""
    split: dict[str, Stats] = field(default_factory=dict)
    """8 client threads split over 2 processes (the 8-thread targets), by operation."""
    split_error: str = ""
    """Why the 2-process measurement stopped early (a client process died or timed out), if it did."""


@dataclass(frozen=True)
class TargetCheck:
    """One target of the issue and whether this run met it."""

    name: str
    measured: str
    target: str
    met: bool | None  # None: could not be evaluated


def _ms(value: float) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _rate(value: float) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _cores(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


def _ratio(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}×"


def _mark(met: bool | None) -> str:
    return {True: "met", False: "**MISSED**", None: "n/a"}[met]


def _cells(stats: Stats | None) -> list[str]:
    if stats is None:
        return ["—", "—", "—"]
    rate = _rate(stats.ops_per_s) + (f" ({stats.errors} err)" if stats.errors else "")
    return [rate, _ms(stats.p50), _ms(stats.p99)]


def _best_rate(stats: Sequence[Stats | None]) -> float:
    rates = [s.ops_per_s for s in stats if s is not None and s.n]
    return max(rates) if rates else math.nan


def _header(first: Sequence[str], labels: Sequence[str], cells: Sequence[str], tail: Sequence[str]) -> list[str]:
    columns = [*first]
    for label in labels:
        columns += [f"{label} {c}" for c in cells]
    columns += tail
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def matrix_table(
    calabi: ServerResults,
    mlflows: Sequence[ServerResults],
    ops: Sequence[str],
    threads: Sequence[int],
    *,
    checked: Sequence[int],
) -> tuple[list[str], list[TargetCheck]]:
    """Per operation and thread count: ops/s, p50, p99 for every server and the ratio.

    Targets are checked on the rows of the ``checked`` thread counts; the others show the ratio only.
    """
    servers = [calabi, *mlflows]
    lines = _header(
        ["operation", "threads"],
        [s.label for s in servers],
        ["ops/s", "p50 ms", "p99 ms"],
        ["Calabi ÷ faster MLflow (ops/s)", "target", ""],
    )
    checks = []
    for op in ops:
        for n in threads:
            mine = calabi.matrix.get((op, n))
            best = _best_rate([m.matrix.get((op, n)) for m in mlflows])
            ratio = mine.ops_per_s / best if mine is not None and mine.n and best > 0 else math.nan
            target = TARGET_BY_OP.get(op) if n in checked else None
            met = None if target is None or math.isnan(ratio) else ratio >= target
            row = [op, str(n)]
            for server in servers:
                row += _cells(server.matrix.get((op, n)))
            row += [_ratio(ratio), f"≥{target:g}×" if target else "—", _mark(met) if target else ""]
            lines.append("| " + " | ".join(row) + " |")
            if target is not None:
                checks.append(
                    TargetCheck(
                        f"{op}, {n} thread{'s' if n > 1 else ''}: throughput", _ratio(ratio), f"≥{target:g}×", met
                    )
                )
    return lines, checks


def throughput_table(calabi: ServerResults, mlflows: Sequence[ServerResults]) -> tuple[list[str], list[TargetCheck]]:
    """Throughput on the large model (transitions and get-latest at N versions)."""
    servers = [calabi, *mlflows]
    lines = _header(
        ["operation", "versions", "threads"],
        [s.label for s in servers],
        ["ops/s", "p50 ms", "p99 ms"],
        ["Calabi ÷ faster MLflow (ops/s)", "target", ""],
    )
    checks = []
    for op, mine in calabi.scale_throughput.items():
        best = _best_rate([m.scale_throughput.get(op) for m in mlflows])
        ratio = mine.ops_per_s / best if mine.n and best > 0 else math.nan
        met = None if math.isnan(ratio) else ratio >= AT_SCALE_TARGET
        row = [op, f"{calabi.throughput_versions:,}", str(mine.threads)]
        for server in servers:
            row += _cells(server.scale_throughput.get(op))
        row += [_ratio(ratio), f"≥{AT_SCALE_TARGET:g}×", _mark(met)]
        lines.append("| " + " | ".join(row) + " |")
        checks.append(
            TargetCheck(
                f"{op} at {calabi.throughput_versions:,} versions: throughput",
                _ratio(ratio),
                f"≥{AT_SCALE_TARGET:g}×",
                met,
            )
        )
    return lines, checks


def flatness_table(
    calabi: ServerResults, mlflows: Sequence[ServerResults], ops: Sequence[str], scales: Sequence[int]
) -> tuple[list[str], list[TargetCheck]]:
    """Single-thread latency on the large model at each size, and p99 growth smallest → largest."""
    servers = [calabi, *mlflows]
    lines = _header(["operation", "versions"], [s.label for s in servers], ["p50 ms", "p99 ms", "n"], [])
    for op in ops:
        for size in scales:
            row = [op, f"{size:,}"]
            for server in servers:
                stats = server.scale_latency.get((op, size))
                row += ["—", "—", "—"] if stats is None else [_ms(stats.p50), _ms(stats.p99), str(stats.n)]
            lines.append("| " + " | ".join(row) + " |")
    lo, hi = min(scales), max(scales)
    lines += [
        "",
        f"p99 growth, {lo:,} → {hi:,} versions:",
        "",
        "| operation | "
        + " | ".join(f"{s.label} p99 at {hi:,} ÷ p99 at {lo:,}" for s in servers)
        + " | target (Calabi) | |",
        "|---|" + "---|" * (len(servers) + 2),
    ]
    checks = []
    for op in ops:
        row = [op]
        for server in servers:
            a, b = server.scale_latency.get((op, lo)), server.scale_latency.get((op, hi))
            row.append(_ratio(b.p99 / a.p99) if a and b and a.n and b.n else "—")
        a, b = calabi.scale_latency.get((op, lo)), calabi.scale_latency.get((op, hi))
        growth_value = b.p99 / a.p99 if a and b and a.n and b.n else math.nan
        met = None if math.isnan(growth_value) else growth_value <= FLATNESS_TARGET
        row += [f"≤{FLATNESS_TARGET:g}×", _mark(met)]
        lines.append("| " + " | ".join(row) + " |")
        checks.append(
            TargetCheck(
                f"{op}: Calabi p99 at {hi:,} ÷ p99 at {lo:,}", _ratio(growth_value), f"≤{FLATNESS_TARGET:g}×", met
            )
        )
    return lines, checks


def cpu_table(results: Sequence[ServerResults], ops: Sequence[str], threads: Sequence[int]) -> list[str]:
    """CPU per successful call: the server's processes and the client (bench) process."""
    lines = _header(["operation", "threads / versions"], [r.label for r in results], ["server ms", "client ms"], [])
    rows: list[tuple[str, str, list[Stats | None]]] = []
    for op in ops:
        for n in threads:
            rows.append((op, f"x{n}", [r.matrix.get((op, n)) for r in results]))
    scale_keys = sorted({k for r in results for k in r.scale_latency}, key=lambda k: (k[0], k[1]))
    for op, size in scale_keys:
        rows.append((op, f"@{size:,}", [r.scale_latency.get((op, size)) for r in results]))
    for op, label, stats in rows:
        cells = [op, label]
        for st in stats:
            cells += ["—", "—"] if st is None else [_ms(st.server_cpu_ms_per_call), _ms(st.client_cpu_ms_per_call)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _vs_best(mine: Stats | None, others: Sequence[Stats | None]) -> float:
    best = _best_rate(others)
    return mine.ops_per_s / best if mine is not None and mine.n and best > 0 else math.nan


def split_table(
    calabi: ServerResults, mlflows: Sequence[ServerResults], ops: Sequence[str], threads: int, layout: str
) -> tuple[list[str], list[TargetCheck]]:
    """The ``threads`` client threads over several processes: ops/s, p50, p99 per server, the ratio and
    its target, next to the ratio of the same threads in 1 process."""
    servers = [calabi, *mlflows]
    lines = _header(
        ["operation"],
        [s.label for s in servers],
        ["ops/s", "p50 ms", "p99 ms"],
        ["Calabi ÷ faster MLflow (ops/s)", "target", "", f"same ratio, {threads} threads in 1 process"],
    )
    checks = []
    for op in ops:
        row = [op]
        for server in servers:
            row += _cells(server.split.get(op))
        ratio = _vs_best(calabi.split.get(op), [m.split.get(op) for m in mlflows])
        target = TARGET_BY_OP.get(op)
        met = None if target is None or math.isnan(ratio) else ratio >= target
        one = _vs_best(calabi.matrix.get((op, threads)), [m.matrix.get((op, threads)) for m in mlflows])
        row += [_ratio(ratio), f"≥{target:g}×" if target else "—", _mark(met) if target else "", _ratio(one)]
        lines.append("| " + " | ".join(row) + " |")
        if target is not None:
            name = f"{op}, {threads} threads ({layout}): throughput"
            checks.append(TargetCheck(name, _ratio(ratio), f"≥{target:g}×", met))
    return lines, checks


def saturation_table(results: Sequence[ServerResults], ops: Sequence[str], threads: int, layout: str) -> list[str]:
    """CPU per call and cores kept busy, client and server, for 1 process × ``threads`` and ``layout``."""
    lines = [
        "| operation | server | clients | ops/s | client CPU ms/call | client cores | server CPU ms/call "
        "| server cores |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for op in ops:
        for server in results:
            for clients, st in (
                (f"1 process × {threads} threads", server.matrix.get((op, threads))),
                (layout, server.split.get(op)),
            ):
                if st is None:
                    continue
                lines.append(
                    f"| {op} | {server.label} | {clients} | {_rate(st.ops_per_s)} | {_ms(st.client_cpu_ms_per_call)} "
                    f"| {_cores(st.client_cores)} | {_ms(st.server_cpu_ms_per_call)} | {_cores(st.server_cores)} |"
                )
    return lines


def populate_table(results: Sequence[ServerResults]) -> list[str]:
    """How long growing the large model took (creates through the client, several threads)."""
    lines = [
        "| server | model | versions | threads | created | seconds | creates/s | errors (retried) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for server in results:
        for p in server.populate:
            lines.append(
                f"| {server.label} | `{p.model}` | {p.from_versions:,} → {p.to_versions:,} | {p.threads} "
                f"| {p.created:,} | {p.elapsed_s:.1f} | {_rate(p.per_s)} | {p.errors} |"
            )
    return lines


def nagle_table(results: Sequence[ServerResults]) -> tuple[list[str], list[TargetCheck]]:
    """Kept-alive vs fresh-connection latency of one GET, 1 thread."""
    lines = [
        "| server | kept-alive p50 ms | kept-alive p99 ms | fresh-connection p50 ms | verdict |",
        "|---|---|---|---|---|",
    ]
    checks = []
    for server in results:
        nagle = server.nagle
        if nagle is None:
            continue
        lines.append(
            f"| {server.label} | {_ms(nagle.keepalive.p50)} | {_ms(nagle.keepalive.p99)} "
            f"| {_ms(nagle.fresh.p50)} | {nagle.verdict()} |"
        )
        if server.key == "calabi":
            checks.append(
                TargetCheck(
                    "Calabi has no 40 ms keep-alive stall (kept-alive p50)",
                    f"{_ms(nagle.keepalive.p50)} ms",
                    "≪ 40 ms",
                    not nagle.stalls,
                )
            )
    return lines, checks


def targets_table(checks: Sequence[TargetCheck]) -> list[str]:
    """Every target with the measured value and met/missed."""
    lines = ["| target | measured | required | |", "|---|---|---|---|"]
    lines += [f"| {c.name} | {c.measured} | {c.target} | {_mark(c.met)} |" for c in checks]
    return lines
