"""What a driven run measured (latencies, errors, CPU) and how rounds of it are merged."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Stats", "merge_rounds", "percentile"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Stats:
    """What one driven run measured."""

    threads: int
    latencies_ms: list[float]
    errors: int
    elapsed_s: float
    first_error: str | None = None
    capped: bool = False
    client_cpu_s: float = math.nan
    """CPU time the bench process (client threads) used during the run."""
    server_cpu_s: float = math.nan
    """CPU time the server's processes used during the run (NaN when not measured)."""
    round_rates: list[float] = field(default_factory=list)
    """Throughput of each round when several runs were merged (see ``merge_rounds``)."""

    @property
    def n(self) -> int:
        """Successful calls."""
        return len(self.latencies_ms)

    @property
    def ops_per_s(self) -> float:
        """Successful calls per second of wall time, all threads together (median over rounds, if merged)."""
        if self.round_rates:
            return statistics.median(self.round_rates)
        return self.n / self.elapsed_s if self.elapsed_s > 0 else math.nan

    @property
    def client_cpu_ms_per_call(self) -> float:
        """Client CPU per successful call (the MLflow client's own cost, same for every server)."""
        return self.client_cpu_s / self.n * 1000 if self.n else math.nan

    @property
    def server_cpu_ms_per_call(self) -> float:
        """Server CPU per successful call, all its processes together (10 ms clock-tick resolution)."""
        return self.server_cpu_s / self.n * 1000 if self.n else math.nan

    @property
    def client_cores(self) -> float:
        """Cores the client kept busy on average (≈1 means the GIL-bound client is saturated)."""
        return self.client_cpu_s / self.elapsed_s if self.elapsed_s > 0 else math.nan

    @property
    def server_cores(self) -> float:
        """Cores the server's processes kept busy on average during the run."""
        return self.server_cpu_s / self.elapsed_s if self.elapsed_s > 0 else math.nan

    @property
    def p50(self) -> float:
        """Median latency in ms."""
        return percentile(sorted(self.latencies_ms), 50)

    @property
    def p99(self) -> float:
        """99th-percentile latency in ms (nearest rank: with n < 100 it is the maximum)."""
        return percentile(sorted(self.latencies_ms), 99)

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly summary."""
        return {
            "threads": self.threads,
            "n": self.n,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed_s, 3),
            "ops_per_s": round(self.ops_per_s, 2),
            "p50_ms": round(self.p50, 3),
            "p99_ms": round(self.p99, 3),
            "mean_ms": round(statistics.fmean(self.latencies_ms), 3) if self.latencies_ms else None,
            "capped": self.capped,
            "first_error": self.first_error,
            "round_ops_per_s": [round(r, 2) for r in self.round_rates],
            "client_cpu_ms_per_call": round(self.client_cpu_ms_per_call, 3),
            "client_cores": round(self.client_cores, 3),
            "server_cpu_ms_per_call": round(self.server_cpu_ms_per_call, 3),
            "server_cores": round(self.server_cores, 3),
        }


def merge_rounds(runs: Sequence[Stats]) -> Stats:
    """One Stats from several rounds of the same measurement.

    Latencies are pooled (p50/p99 over every call); throughput is the median of the rounds'
    throughputs, so one round hit by a burst of outside load does not move it.
    """
    if len(runs) == 1:
        return runs[0]
    return Stats(
        threads=runs[0].threads,
        latencies_ms=[x for r in runs for x in r.latencies_ms],
        errors=sum(r.errors for r in runs),
        elapsed_s=sum(r.elapsed_s for r in runs),
        first_error=next((r.first_error for r in runs if r.first_error), None),
        capped=any(r.capped for r in runs),
        client_cpu_s=sum(r.client_cpu_s for r in runs),
        server_cpu_s=sum(r.server_cpu_s for r in runs),
        round_rates=[r.ops_per_s for r in runs],
    )
